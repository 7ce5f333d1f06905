//! One module per `herz` verb.

pub mod publish;
pub mod run;
pub mod stats;
pub mod sub;
