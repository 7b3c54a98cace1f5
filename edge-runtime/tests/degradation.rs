//! The capture property (issue 27, docs/quality.md): a diseased photo the shipped model refers at
//! its nominal capture is, after every degradation of the sweep (exposure, gamma, colour cast,
//! blur, noise, JPEG quality, off-centre framing, crops), referred, ungradable, or inside the
//! borderline band (shown "borderline: refer or retake"): never a silent "no referral".
//!
//! A fixed sample of the handout's real photos: from every set, every (n/4)-th photo of the
//! model's positive class, 12 photos in all, each under the whole sweep.

mod common;
use common::data;

use drscreen_core::contract::PositiveClass;
use edge_runtime::degrade::{diseased_sample, load, photo, sweep, SETS};
use edge_runtime::engine::{default_model, Engine};
use edge_runtime::record::Outcome;
use edge_runtime::screen::Screener;

const PER_SET: usize = 4;

#[test]
fn no_degradation_turns_a_referred_photo_into_a_silent_no_referral() {
    let engine = Engine::load(&default_model()).expect("shipped model loads");
    let referable = engine.contract.positive_class == PositiveClass::ReferableDr;
    let mut s = Screener::new(engine);
    let root = data("");
    let degradations = sweep();
    let (mut referred, mut screenings) = (0, 0);
    let mut silent = Vec::new();
    for set in SETS {
        let sample = diseased_sample(&root, set, referable, PER_SET).expect("label table");
        assert_eq!(sample.len(), PER_SET, "{set}: too few diseased photos");
        for (p, grade) in &sample {
            let img = load(p, set).expect("photo decodes");
            let name = p.display().to_string();
            if s.screen_rgb(&name, &photo(&img)).outcome != Outcome::Refer {
                continue; // a miss of the model itself, not of the capture
            }
            referred += 1;
            for d in &degradations {
                let r = s.screen_rgb(&name, &photo(&d.apply(&img)));
                screenings += 1;
                if r.outcome == Outcome::NoReferral && !r.borderline {
                    let m = r.quality_metrics.expect("a screened photo has its metrics");
                    silent.push(format!(
                        "{set} {} (grade {grade}) {} {}: p {:.3}, luma {:.1}, sharpness {:.1}",
                        p.file_name().unwrap_or_default().to_string_lossy(),
                        d.kind(),
                        d.strength(),
                        r.probability.unwrap_or(f32::NAN),
                        m.mean_luma,
                        m.laplacian_var,
                    ));
                }
            }
        }
    }
    // The property means nothing on a sample the model misses at nominal capture.
    assert!(
        referred >= 2 * PER_SET,
        "only {referred} of {} sampled diseased photos referred at nominal capture",
        PER_SET * SETS.len()
    );
    assert!(
        silent.is_empty(),
        "{} of {screenings} degraded screenings of {referred} referred photos are a silent no referral:\n{}",
        silent.len(),
        silent.join("\n")
    );
}
