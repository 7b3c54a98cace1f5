//! Export: the trained network as ONNX that carries its contract, and its golden outputs.
pub mod equalize;
pub mod gptq;
pub mod import;
pub mod onnx;
pub mod qat;
pub mod quantize;
pub mod run;
