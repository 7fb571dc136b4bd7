//! Local model files: the pickers, and dropped files and folders.
use leptos::prelude::*;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{File, FileList};

use super::{LocalPick, State};
use crate::error::AppError;
use crate::{api, format};

pub(super) fn pick_files(s: State, list: &FileList) {
    pick(s, (0..list.length()).filter_map(|i| list.get(i)).collect());
}

pub(super) fn pick(s: State, files: Vec<File>) {
    if files.is_empty() {
        return;
    }
    let bytes: f64 = files.iter().map(|f| f.size()).sum();
    let label = if let [file] = files.as_slice() {
        format!("{} ({})", file.name(), format::bytes(bytes))
    } else {
        // A folder pick names files by their path inside it; the first part is the folder.
        let folder = files
            .first()
            .and_then(|f| js_sys::Reflect::get(f, &JsValue::from_str("webkitRelativePath")).ok())
            .and_then(|p| p.as_string())
            .and_then(|p| p.split('/').next().map(str::to_string))
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "files".to_string());
        format!("{folder} ({} files, {})", files.len(), format::bytes(bytes))
    };
    s.local.set(Some(LocalPick { files, label }));
}

fn get(target: &JsValue, key: &str) -> Option<JsValue> {
    js_sys::Reflect::get(target, &JsValue::from_str(key)).ok()
}

pub(super) fn is_true(target: &JsValue, key: &str) -> bool {
    get(target, key).is_some_and(|v| v.is_truthy())
}

/// The `FileSystemEntry` of each dropped item.
pub(super) fn dropped_entries(transfer: &web_sys::DataTransfer) -> Vec<JsValue> {
    let Some(items) = get(transfer, "items") else {
        return Vec::new();
    };
    let length = get(&items, "length")
        .and_then(|l| l.as_f64())
        .unwrap_or(0.0) as u32;
    (0..length)
        .filter_map(|i| js_sys::Reflect::get_u32(&items, i).ok())
        .filter_map(|item| {
            let f = get(&item, "webkitGetAsEntry")?
                .dyn_into::<js_sys::Function>()
                .ok()?;
            f.call0(&item)
                .ok()
                .filter(|e| !e.is_null() && !e.is_undefined())
        })
        .collect()
}

/// Calls a callback-style entry method (`file`, `readEntries`) and awaits its result.
async fn callback_call(target: &JsValue, method: &str) -> Result<JsValue, AppError> {
    let function = get(target, method)
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .ok_or_else(|| {
            AppError::Other(format!(
                "This browser cannot read dropped folders ({method} is missing)."
            ))
        })?;
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        if let Err(e) = function.call2(target, &resolve, &reject) {
            let _ = reject.call1(&JsValue::NULL, &e);
        }
    });
    wasm_bindgen_futures::JsFuture::from(promise)
        .await
        .map_err(api::error_from_js)
}

/// Every file under the dropped entries, named by its path as a folder pick would name it
/// (`webkitRelativePath`), so the engine sees the same thing either way.
pub(super) async fn walk_entries(mut pending: Vec<JsValue>) -> Result<Vec<File>, AppError> {
    let mut files = Vec::new();
    while let Some(entry) = pending.pop() {
        if is_true(&entry, "isDirectory") {
            let reader = get(&entry, "createReader")
                .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
                .and_then(|f| f.call0(&entry).ok())
                .ok_or_else(|| {
                    AppError::Other("This browser cannot read dropped folders.".into())
                })?;
            // readEntries answers in batches until it answers with none.
            loop {
                let batch: js_sys::Array = callback_call(&reader, "readEntries")
                    .await?
                    .unchecked_into();
                if batch.length() == 0 {
                    break;
                }
                pending.extend(batch.iter());
            }
        } else if is_true(&entry, "isFile") {
            let file: File = callback_call(&entry, "file").await?.unchecked_into();
            let path = get(&entry, "fullPath")
                .and_then(|p| p.as_string())
                .map(|p| p.trim_start_matches('/').to_string())
                .unwrap_or_else(|| file.name());
            let descriptor = js_sys::Object::new();
            let _ = js_sys::Reflect::set(
                &descriptor,
                &JsValue::from_str("value"),
                &JsValue::from_str(&path),
            );
            let _ = js_sys::Object::define_property(
                &file,
                &JsValue::from_str("webkitRelativePath"),
                &descriptor,
            );
            files.push(file);
        }
    }
    files.sort_by_key(|f| get(f, "webkitRelativePath").and_then(|p| p.as_string()));
    Ok(files)
}
