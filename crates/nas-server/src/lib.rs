//! The account server: configuration, the verified-JWT cache, the single accept rule, the HTTP
//! API, metrics and the NATS bridge. The binary in the workspace root only parses flags
//! and calls [`server::Server::start`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod accept;
pub mod activation;
pub mod audit;
pub mod backend;
pub mod cache;
pub mod config;
pub mod delete;
pub mod drift;
mod help;
pub mod http;
pub mod instrumented;
pub mod listener;
pub mod metrics;
pub mod nats;
pub mod notify;
pub mod pack;
pub mod replica;
pub mod resolver;
pub mod server;
pub mod signing;
pub mod upkeep;
pub mod view;
pub mod watch;
