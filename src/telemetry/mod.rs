//! What happened: one finished request as it is recorded ([`entry`]), per-request traces and
//! per-backend statistics ([`observe`]), the request journal in SQLite ([`journal`]), the
//! status snapshot readers share ([`status`]), and the log's writer ([`logline`]).
//!
//! The modules import downwards only: `observe` → `journal` → `entry`, and `status` names
//! `observe`'s figures. Telemetry sits below `routing`, `relay`, `server` and `desktop`, which
//! report to it or read it: it imports none of them.

pub mod entry;
pub mod journal;
pub mod logline;
pub mod observe;
pub mod status;
pub mod timeline;
