//! Patient-level stratified split: both eyes of a patient, byte-identical photos and listed
//! near-duplicates always land on the same side; each side keeps the positive rate of the whole;
//! seeded. Several sources are split one by one (`cache::prepare`), so each has its own val part.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// A split name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Val,
    Test,
}

impl Split {
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

struct UnionFind(Vec<usize>);

impl UnionFind {
    fn find(&mut self, mut i: usize) -> usize {
        while self.0[i] != i {
            self.0[i] = self.0[self.0[i]];
            i = self.0[i];
        }
        i
    }
    fn union(&mut self, a: usize, b: usize) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            self.0[ra] = rb;
        }
    }
}

/// Groups of record indices that must stay together: same patient, same content hash, or a
/// listed near-duplicate pair (`links`).
pub fn groups(patients: &[&str], hashes: &[&str], links: &[(usize, usize)]) -> Vec<Vec<usize>> {
    let n = patients.len();
    let mut uf = UnionFind((0..n).collect());
    for &(a, b) in links {
        uf.union(a, b);
    }
    for key in [patients, hashes] {
        let mut first = std::collections::HashMap::new();
        for (i, k) in key.iter().enumerate() {
            if let Some(&j) = first.get(k) {
                uf.union(i, j);
            } else {
                first.insert(*k, i);
            }
        }
    }
    let mut by_root: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for i in 0..n {
        let r = uf.find(i);
        by_root.entry(r).or_default().push(i);
    }
    by_root.into_values().collect()
}

/// Assigns every record a split. `val` and `test` are fractions of images (the rest is train);
/// a group counts as positive if any of its photos is. Deterministic for a seed.
pub fn assign(
    patients: &[&str],
    hashes: &[&str],
    links: &[(usize, usize)],
    positive: &[bool],
    val: f64,
    test: f64,
    seed: u64,
) -> Vec<Split> {
    let mut out = vec![Split::Train; patients.len()];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let all = groups(patients, hashes, links);
    for stratum in [true, false] {
        let mut gs: Vec<&Vec<usize>> = all
            .iter()
            .filter(|g| g.iter().any(|&i| positive[i]) == stratum)
            .collect();
        gs.shuffle(&mut rng);
        let total: usize = gs.iter().map(|g| g.len()).sum();
        let (want_test, want_val) = (
            (total as f64 * test).round() as usize,
            (total as f64 * val).round() as usize,
        );
        let (mut n_test, mut n_val) = (0, 0);
        for g in gs {
            let split = if n_test < want_test {
                n_test += g.len();
                Split::Test
            } else if n_val < want_val {
                n_val += g.len();
                Split::Val
            } else {
                Split::Train
            };
            for &i in g {
                out[i] = split;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patients_and_duplicates_never_straddle_splits() {
        let n = 400;
        let patients: Vec<String> = (0..n).map(|i| format!("p{}", i / 2)).collect();
        let mut hashes: Vec<String> = (0..n).map(|i| format!("h{i}")).collect();
        hashes[7] = "h100".into(); // a byte-identical photo of another patient
        let links = [(11, 301)]; // a near-duplicate pair
        let positive: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
        let p: Vec<&str> = patients.iter().map(String::as_str).collect();
        let h: Vec<&str> = hashes.iter().map(String::as_str).collect();
        let s = assign(&p, &h, &links, &positive, 0.2, 0.1, 42);
        for i in (0..n).step_by(2) {
            assert_eq!(s[i], s[i + 1], "patient {} split", i / 2);
        }
        assert_eq!(s[7], s[100]);
        assert_eq!(s[11], s[301]);
        let count = |x: Split| s.iter().filter(|&&y| y == x).count();
        assert!(
            (70..=90).contains(&count(Split::Val)),
            "val {}",
            count(Split::Val)
        );
        assert!((30..=50).contains(&count(Split::Test)));
        let pos_rate = |x: Split| {
            let idx: Vec<usize> = (0..n).filter(|&i| s[i] == x).collect();
            idx.iter().filter(|&&i| positive[i]).count() as f64 / idx.len() as f64
        };
        assert!((pos_rate(Split::Val) - pos_rate(Split::Train)).abs() < 0.1);
        assert_eq!(
            s,
            assign(&p, &h, &links, &positive, 0.2, 0.1, 42),
            "same seed, same split"
        );
        assert_ne!(s, assign(&p, &h, &links, &positive, 0.2, 0.1, 43));
    }
}
