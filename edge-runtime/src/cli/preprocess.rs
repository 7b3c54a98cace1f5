//! `edge-runtime preprocess IMAGE --out OUT.png|OUT.npy [--stage clahe|disc|resized] [--model FILE]`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, ValueEnum};
use drscreen_core::{to_chw_f32, Workspace};
use tract_onnx::prelude::Framework;

use edge_runtime::decode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Stage {
    /// The equalised photo at full size (Lab, CLAHE on L*, back to RGB): whole-frame models.
    Clahe,
    /// The fundus disc's square at the input size, before CLAHE: field-of-view models.
    Disc,
    /// The model input: equalised and resized.
    Resized,
}

#[derive(ClapArgs, Debug)]
pub struct Args {
    /// Fundus photo (JPEG or PNG).
    pub image: PathBuf,
    /// Output: `.png` (RGB8, to look at) or `.npy` (float32 1x3xHxW in [0,1], what the network gets).
    #[arg(long)]
    pub out: PathBuf,
    /// Which stage to write.
    #[arg(long, value_enum, default_value = "resized")]
    pub stage: Stage,
    /// The model whose contract (geometry, size, CLAHE) is applied (default: the one `screen` uses).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Input side in pixels, instead of the model's.
    #[arg(long)]
    pub size: Option<u32>,
}

pub fn run(args: &Args) -> Result<()> {
    let model = match &args.model {
        Some(p) => p.clone(),
        None => edge_runtime::engine::locate_model()?,
    };
    let onnx = tract_onnx::onnx()
        .model_for_path(&model)
        .with_context(|| format!("reading model {}", model.display()))?;
    let mut contract = edge_runtime::engine::read_contract(&onnx, &model)?;
    if let Some(s) = args.size {
        contract.input.width = s;
        contract.input.height = s;
    }
    contract
        .validate()
        .context("invalid preprocessing parameters")?;
    let spec = contract.preprocess_spec();
    let photo = decode::load_rgb8(&args.image)?;
    let mut ws = Workspace::default();
    let (rgb, w, h) = match args.stage {
        Stage::Clahe if spec.fov.is_some() => bail!(
            "{} crops the fundus disc before CLAHE: ask for --stage disc (or resized)",
            model.display()
        ),
        Stage::Disc if spec.fov.is_none() => bail!(
            "{} equalises the whole frame: ask for --stage clahe (or resized)",
            model.display()
        ),
        Stage::Disc => {
            let (rgb, _) = ws
                .fov_stage(&photo.rgb, photo.width, photo.height, &spec)
                .with_context(|| format!("finding the fundus disc in {}", args.image.display()))?;
            (rgb, spec.out_width, spec.out_height)
        }
        Stage::Clahe => (
            ws.equalise(&photo.rgb, photo.width, photo.height, &spec.clahe)
                .with_context(|| format!("equalising {}", args.image.display()))?,
            photo.width,
            photo.height,
        ),
        Stage::Resized => (
            ws.preprocess(&photo.rgb, photo.width, photo.height, &spec)
                .with_context(|| format!("preprocessing {}", args.image.display()))?,
            spec.out_width,
            spec.out_height,
        ),
    };
    let ext = args
        .out
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("png") => image::save_buffer(
            &args.out,
            &rgb,
            w as u32,
            h as u32,
            image::ExtendedColorType::Rgb8,
        )
        .with_context(|| format!("writing {}", args.out.display()))?,
        Some("npy") => {
            let mut chw = vec![0f32; rgb.len()];
            to_chw_f32(&rgb, w, h, &mut chw)?;
            let bytes = drscreen_core::npy::to_npy(&[1, 3, h, w], &chw).context("tensor shape")?;
            std::fs::write(&args.out, bytes)
                .with_context(|| format!("writing {}", args.out.display()))?;
        }
        _ => bail!("--out {} must end in .png or .npy", args.out.display()),
    }
    Ok(())
}
