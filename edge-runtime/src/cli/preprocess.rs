//! `edge-runtime preprocess IMAGE --out OUT.png|OUT.npy [--stage clahe|resized]`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args as ClapArgs, ValueEnum};
use drscreen_core::{to_chw_f32, ModelContract, Workspace};

use edge_runtime::decode;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Stage {
    /// The equalised photo at full size (Lab, CLAHE on L*, back to RGB).
    Clahe,
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
    /// Model input side in pixels (square); default from the seed contract (96).
    #[arg(long)]
    pub size: Option<u32>,
}

pub fn run(args: &Args) -> Result<()> {
    let mut contract = ModelContract::default();
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
