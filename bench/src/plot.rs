//! PNG plots with plotters' bitmap backend. Text is drawn with a TTF read at run time (DejaVu Sans
//! from Debian's fonts-dejavu-core, registered through plotters' `ab_glyph` feature), so no system
//! font library is linked. Without a font the plots are drawn without text, and report.md carries
//! the legend (it always does: colours are listed there).

use std::path::Path;

use plotters::{
    prelude::*,
    style::{FontStyle, register_font},
};

use crate::{
    run::System,
    scenarios::{Point, ScenarioResult},
};

const FONT_PATHS: [&str; 3] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
];

/// Registers a font for "sans-serif"; false when none is found.
pub fn init_font() -> bool {
    for p in FONT_PATHS {
        if let Ok(bytes) = std::fs::read(p) {
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
    }
    false
}

/// The colour of a system in every plot (listed in report.md too).
pub fn color(sys: System) -> RGBColor {
    match sys {
        System::HerzTcp => RGBColor(214, 39, 40),
        System::HerzMcast => RGBColor(255, 127, 14),
        System::Nats => RGBColor(31, 119, 180),
        System::Zmq => RGBColor(44, 160, 44),
        System::RawTcp => RGBColor(60, 60, 60),
        System::RawMcast => RGBColor(150, 150, 150),
        System::HerzTcpNone => RGBColor(148, 103, 189),
        System::HerzTcpBatch => RGBColor(140, 86, 75),
        System::HerzTcpEvery => RGBColor(227, 119, 194),
    }
}

/// The colour legend, for report.md.
pub fn legend_md() -> String {
    let mut s = String::from("Plot colours: ");
    let parts: Vec<String> = [
        (System::HerzTcp, "red"),
        (System::HerzMcast, "orange"),
        (System::Nats, "blue"),
        (System::Zmq, "green"),
        (System::RawTcp, "dark grey"),
        (System::RawMcast, "light grey"),
    ]
    .iter()
    .map(|(s, c)| format!("{} = {c}", s.label()))
    .collect();
    s.push_str(&parts.join(", "));
    s.push_str(". Points marked with a cross had no valid run (loss or errors).");
    s
}

type DynErr = Box<dyn std::error::Error>;

/// One line: a system's (x index, y, valid) points.
type Series = (System, Vec<(usize, f64, bool)>);

/// One panel: x categories, one line per system.
struct Panel<'a> {
    title: String,
    x_desc: &'a str,
    y_desc: &'a str,
    x_labels: Vec<String>,
    log_y: bool,
    series: Vec<Series>,
}

fn draw_panel(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    p: &Panel<'_>,
    text: bool,
) -> Result<(), DynErr> {
    let k = p.x_labels.len().max(1);
    let ymax = p
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|x| x.1))
        .fold(0.0f64, f64::max)
        .max(1e-9);
    let ymin = p
        .series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|x| x.1))
        .filter(|y| *y > 0.0)
        .fold(f64::INFINITY, f64::min);
    let mut b = ChartBuilder::on(area);
    b.margin(12);
    if text {
        b.caption(&p.title, ("sans-serif", 18))
            .x_label_area_size(40)
            .y_label_area_size(64);
    } else {
        b.x_label_area_size(4).y_label_area_size(4);
    }
    let xr = -0.5f64..(k as f64 - 0.5);
    let labels = p.x_labels.clone();
    let fmt_x = move |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 0.01 && i >= 0.0 && (i as usize) < labels.len() {
            labels[i as usize].clone()
        } else {
            String::new()
        }
    };
    macro_rules! body {
        ($chart:ident) => {{
            {
                let mut mesh = $chart.configure_mesh();
                mesh.disable_x_mesh().light_line_style(TRANSPARENT);
                if text {
                    mesh.x_labels(k * 4 + 1)
                        .x_label_formatter(&fmt_x)
                        .y_label_formatter(&|v: &f64| {
                            if *v >= 10.0 {
                                format!("{v:.0}")
                            } else {
                                format!("{v:.1}")
                            }
                        })
                        .x_desc(p.x_desc)
                        .y_desc(p.y_desc)
                        .label_style(("sans-serif", 13));
                } else {
                    mesh.x_labels(0).y_labels(0);
                }
                mesh.draw()?;
            }
            for (sys, pts) in &p.series {
                let c = color(*sys);
                let line: Vec<(f64, f64)> = pts.iter().map(|(x, y, _)| (*x as f64, *y)).collect();
                let s = $chart.draw_series(LineSeries::new(line, c.stroke_width(2)))?;
                if text {
                    s.label(sys.label()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3))
                    });
                }
                for (x, y, valid) in pts {
                    let at = (*x as f64, *y);
                    if *valid {
                        $chart.draw_series(std::iter::once(Circle::new(at, 4, c.filled())))?;
                    } else {
                        $chart.draw_series(std::iter::once(Cross::new(
                            at,
                            6,
                            c.stroke_width(2),
                        )))?;
                    }
                }
            }
            if text {
                $chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::UpperRight)
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 13))
                    .draw()?;
            }
        }};
    }
    if p.log_y {
        let lo = if ymin.is_finite() { ymin / 2.0 } else { 1.0 };
        let mut chart = b.build_cartesian_2d(xr, (lo..ymax * 10.0).log_scale())?;
        body!(chart);
    } else {
        // Headroom for the legend in the upper right.
        let mut chart = b.build_cartesian_2d(xr, 0f64..ymax * 1.5)?;
        body!(chart);
    }
    Ok(())
}

fn save(path: &Path, panels: &[Panel<'_>], text: bool) -> Result<(), DynErr> {
    let w = 760 * panels.len().clamp(1, 3) as u32;
    let root = BitMapBackend::new(path, (w, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (a, p) in areas.iter().zip(panels) {
        draw_panel(a, p, text)?;
    }
    root.present()?;
    Ok(())
}

fn throughput_panel<'a>(
    s: &ScenarioResult,
    title: String,
    size: usize,
    systems: &[System],
) -> Panel<'a> {
    let mut subs: Vec<usize> = s
        .points
        .iter()
        .filter(|p| p.size == size)
        .map(|p| p.subscribers)
        .collect();
    subs.sort();
    subs.dedup();
    let series = systems
        .iter()
        .filter_map(|&sys| {
            let pts: Vec<(usize, f64, bool)> = subs
                .iter()
                .enumerate()
                .filter_map(|(i, &n)| {
                    let p: &Point = s.point(sys, n, size, None)?;
                    (p.summary.msgs_per_s > 0.0).then_some((
                        i,
                        p.summary.msgs_per_s / 1e6,
                        p.summary.valid,
                    ))
                })
                .collect();
            (!pts.is_empty()).then_some((sys, pts))
        })
        .collect();
    Panel {
        title,
        x_desc: "subscribers",
        y_desc: "M msgs/s delivered (all subscribers)",
        x_labels: subs.iter().map(|n| n.to_string()).collect(),
        log_y: false,
        series,
    }
}

/// Writes the plots of the scenarios into `dir`; returns the file names written.
pub fn write_all(dir: &Path, scenarios: &[ScenarioResult], text: bool) -> Vec<String> {
    let mut written = Vec::new();
    let mut try_save = |name: &str, panels: Vec<Panel<'_>>| {
        if panels.iter().all(|p| p.series.is_empty()) {
            return;
        }
        match save(&dir.join(name), &panels, text) {
            Ok(()) => written.push(name.to_owned()),
            Err(e) => eprintln!("herz-bench: plot {name}: {e}"),
        }
    };
    for s in scenarios {
        match s.name.as_str() {
            "fanout" => try_save(
                "fanout.png",
                vec![
                    throughput_panel(
                        s,
                        "Fan-out over TCP, 64 B".into(),
                        64,
                        &[System::HerzTcp, System::RawTcp],
                    ),
                    throughput_panel(
                        s,
                        "Fan-out over multicast, 64 B".into(),
                        64,
                        &[System::HerzMcast, System::RawMcast],
                    ),
                ],
            ),
            "peers" => {
                let mut sizes: Vec<usize> = s.points.iter().map(|p| p.size).collect();
                sizes.sort();
                sizes.dedup();
                let all = [
                    System::HerzTcp,
                    System::HerzMcast,
                    System::Nats,
                    System::Zmq,
                    System::RawTcp,
                    System::RawMcast,
                ];
                let panels = sizes
                    .iter()
                    .map(|&size| {
                        throughput_panel(s, format!("Peers, {size} B messages"), size, &all)
                    })
                    .collect();
                try_save("peers.png", panels);
            }
            "latency" => {
                let mut rates: Vec<u64> = s.points.iter().filter_map(|p| p.rate).collect();
                rates.sort();
                rates.dedup();
                let systems: Vec<System> = {
                    let mut v: Vec<System> = s.points.iter().map(|p| p.system).collect();
                    v.sort();
                    v.dedup();
                    v
                };
                let mk = |title: &str, f: fn(&crate::run::Latency) -> f64| Panel {
                    title: title.into(),
                    x_desc: "offered msgs/s",
                    y_desc: "µs (log scale)",
                    x_labels: rates.iter().map(|r| format!("{}k", r / 1000)).collect(),
                    log_y: true,
                    series: systems
                        .iter()
                        .filter_map(|&sys| {
                            let pts: Vec<(usize, f64, bool)> = rates
                                .iter()
                                .enumerate()
                                .filter_map(|(i, &r)| {
                                    let p = s
                                        .points
                                        .iter()
                                        .find(|p| p.system == sys && p.rate == Some(r))?;
                                    let l = p.summary.latency?;
                                    Some((i, f(&l).max(0.1), p.summary.valid))
                                })
                                .collect();
                            (!pts.is_empty()).then_some((sys, pts))
                        })
                        .collect(),
                };
                try_save(
                    "latency.png",
                    vec![
                        mk("Latency p50", |l| l.p50_us),
                        mk("Latency p99", |l| l.p99_us),
                        mk("Latency p99.9", |l| l.p999_us),
                    ],
                );
            }
            _ => {}
        }
    }
    written
}
