//! Bindings to the part of the WebNN API the backend uses (https://www.w3.org/TR/webnn/).
//!
//! `createContext` takes `{deviceType}`: the spec has since dropped the member (contexts are
//! picked by `powerPreference` and the browser), but Chromium, the one engine that ships
//! WebNN, still reads it; an engine that does not simply ignores it.

use js_sys::{Array, Object, Promise};
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
extern "C" {
    pub type ML;
    #[wasm_bindgen(method, catch, js_name = createContext)]
    pub fn create_context(this: &ML, options: &Object) -> Result<Promise, JsValue>;

    #[derive(Clone)]
    pub type MLContext;
    #[wasm_bindgen(method, catch, js_name = createTensor)]
    pub fn create_tensor(this: &MLContext, descriptor: &Object) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch, js_name = writeTensor)]
    pub fn write_tensor(this: &MLContext, tensor: &MLTensor, data: &JsValue)
        -> Result<(), JsValue>;
    #[wasm_bindgen(method, catch, js_name = readTensor)]
    pub fn read_tensor(this: &MLContext, tensor: &MLTensor) -> Result<Promise, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn dispatch(
        this: &MLContext,
        graph: &MLGraph,
        inputs: &Object,
        outputs: &Object,
    ) -> Result<(), JsValue>;
    #[wasm_bindgen(method, catch, js_name = opSupportLimits)]
    pub fn op_support_limits(this: &MLContext) -> Result<JsValue, JsValue>;
    /// Releases the context and everything made on it.
    #[wasm_bindgen(method)]
    pub fn destroy(this: &MLContext);

    #[derive(Clone)]
    pub type MLTensor;
    pub type MLGraph;
    #[derive(Clone)]
    pub type MLOperand;

    pub type MLGraphBuilder;
    #[wasm_bindgen(constructor, catch)]
    pub fn new(context: &MLContext) -> Result<MLGraphBuilder, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn input(this: &MLGraphBuilder, name: &str, desc: &Object) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn constant(
        this: &MLGraphBuilder,
        desc: &Object,
        data: &JsValue,
    ) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn add(this: &MLGraphBuilder, a: &MLOperand, b: &MLOperand) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn sub(this: &MLGraphBuilder, a: &MLOperand, b: &MLOperand) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn mul(this: &MLGraphBuilder, a: &MLOperand, b: &MLOperand) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn div(this: &MLGraphBuilder, a: &MLOperand, b: &MLOperand) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn sigmoid(this: &MLGraphBuilder, x: &MLOperand) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn sqrt(this: &MLGraphBuilder, x: &MLOperand) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn matmul(
        this: &MLGraphBuilder,
        a: &MLOperand,
        b: &MLOperand,
    ) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn reshape(
        this: &MLGraphBuilder,
        x: &MLOperand,
        shape: &Array,
    ) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn transpose(
        this: &MLGraphBuilder,
        x: &MLOperand,
        options: &Object,
    ) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn slice(
        this: &MLGraphBuilder,
        x: &MLOperand,
        starts: &Array,
        sizes: &Array,
    ) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn concat(this: &MLGraphBuilder, xs: &Array, axis: u32) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn gather(
        this: &MLGraphBuilder,
        x: &MLOperand,
        indices: &MLOperand,
        options: &Object,
    ) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn softmax(this: &MLGraphBuilder, x: &MLOperand, axis: u32) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch, js_name = reduceMean)]
    pub fn reduce_mean(
        this: &MLGraphBuilder,
        x: &MLOperand,
        options: &Object,
    ) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn cast(
        this: &MLGraphBuilder,
        x: &MLOperand,
        data_type: &str,
    ) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch, js_name = dequantizeLinear)]
    pub fn dequantize_linear(
        this: &MLGraphBuilder,
        x: &MLOperand,
        scale: &MLOperand,
        zero_point: &MLOperand,
    ) -> Result<MLOperand, JsValue>;
    #[wasm_bindgen(method, catch)]
    pub fn build(this: &MLGraphBuilder, outputs: &Object) -> Result<Promise, JsValue>;
}
