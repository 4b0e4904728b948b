//! The real HTTP adapters against the local vendor sandbox on 127.0.0.1 (feature
//! `sandbox`): success, throttling, invalid number, bad credentials, 5xx, timeout,
//! splits over each vendor's recipient cap, and delivery receipts pulled.

mod aliyun;
mod cloopen;
mod pull;
mod sandbox;
mod support;
mod tencent;
