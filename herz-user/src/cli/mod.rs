//! One module per `herz` verb.

pub mod run;
pub mod stats;
