//! The part of `accel-tool` other crates use: the `serve` protocol's codec ([`serve_codec`],
//! docs/serve-protocol.md), for the launcher's probe and tests, and the pure GEMM helpers
//! ([`gemm`]) it shares with the tool. No I/O and no `unsafe` here; the binary (`main.rs`) holds
//! the device access and the server.
#![forbid(unsafe_code)]

pub mod gemm;
#[path = "serve/codec.rs"]
pub mod serve_codec;
