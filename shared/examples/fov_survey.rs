//! Where the field-of-view step puts the disc square on real photos, per source: the disc's
//! bounding box as a fraction of the photo, and how many photos it finds no disc in.
//!
//! `cargo run --release -p drscreen-core --features decode --example fov_survey -- DATA/idrid/labels.csv ...`
//! (`--threshold T` to try another threshold).

use drscreen_core::fov::{locate, FovParams};

fn quantiles(v: &mut [f32]) -> String {
    v.sort_by(f32::total_cmp);
    let q = |p: f32| v[((v.len() - 1) as f32 * p).round() as usize];
    format!(
        "min {:.3} p1 {:.3} p50 {:.3} p99 {:.3} max {:.3}",
        q(0.0),
        q(0.01),
        q(0.5),
        q(0.99),
        q(1.0)
    )
}

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut p = FovParams::default();
    if let Some(i) = args.iter().position(|a| a == "--threshold") {
        p.threshold = args[i + 1].parse().expect("--threshold 0..=255");
        args.drain(i..i + 2);
    }
    for table in &args {
        let dir = std::path::Path::new(table).parent().unwrap().join("images");
        let text = std::fs::read_to_string(table).expect("label table");
        let (mut fw, mut fh, mut side) = (vec![], vec![], vec![]);
        let mut none = vec![];
        for line in text.lines().skip(1) {
            let name = line.split(',').next().unwrap();
            let bytes = std::fs::read(dir.join(name)).expect("photo");
            let photo = drscreen_core::decode::decode_rgb8(&bytes).expect("decodable photo");
            let (w, h) = (photo.width, photo.height);
            let (mut c, mut r) = (vec![0; w], vec![0; h]);
            match locate(&photo.rgb, w, h, &p, &mut c, &mut r) {
                Ok(sq) => {
                    fw.push(sq.disc_width as f32 / w as f32);
                    fh.push(sq.disc_height as f32 / h as f32);
                    side.push(sq.side as f32 / w.max(h) as f32);
                }
                Err(_) => none.push(name.to_owned()),
            }
        }
        println!(
            "{table} (threshold {}): {} photos, no disc in {} {:?}",
            p.threshold,
            fw.len() + none.len(),
            none.len(),
            none
        );
        println!("  disc width / photo width   {}", quantiles(&mut fw));
        println!("  disc height / photo height {}", quantiles(&mut fh));
        println!("  square side / longer side  {}", quantiles(&mut side));
    }
}
