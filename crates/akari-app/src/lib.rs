//! The akari chat app: a Leptos UI over akari's JavaScript API.
//!
//! The page imports the API module and this crate's wasm, then calls
//! `start(akari)`; the API is reached only through that object (see [`api`]).
pub mod api;
mod app;
pub mod error;
pub mod format;
pub mod markdown;
pub mod options;
pub mod think;
pub mod types;

use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// Mounts the app; `akari` is the `akari.js` module namespace.
#[wasm_bindgen]
pub fn start(akari: JsValue) {
    api::set_module(akari.unchecked_into());
    leptos::mount::mount_to_body(app::App);
}
