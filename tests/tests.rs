//! Integration tests: real HTTP over loopback between a client, the gateway and the mock cloud.

mod cli;
mod continuity;
mod cross;
mod failover;
mod faults;
mod fuzz;
mod gateway;
mod local;
mod models;
mod support;
mod translation;
