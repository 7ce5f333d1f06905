//! One module per `herz` verb.

pub mod block;
pub mod publish;
pub mod run;
pub mod shieldctl;
pub mod stats;
pub mod sub;
pub mod top;
