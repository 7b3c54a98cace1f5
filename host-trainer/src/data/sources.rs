//! Data sources: which label tables a cache is built from, each with its name, licence and weight.
//!
//! A data spec (TOML) lists them:
//!
//! ```toml
//! [[source]]
//! name = "idrid"
//! labels = "../shared/data/idrid/labels.csv"
//! licence = "CC BY 4.0"
//! open_licence = true
//! weight = 1.0          # times each photo is drawn per training epoch (fractions drawn at random)
//! ```
//!
//! Paths are relative to the spec file. A source's photos keep its name and licence through the
//! cache manifest, the run and the model contract; `--open-licence-only` keeps the sources whose
//! licence is open, so that a model's weights inherit no research-only licence.

use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::labels::{read_labels, Layout, Record};

/// One source of labelled photos.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// Short name, unique in a spec (it names the source in every figure).
    pub name: String,
    /// Label table (any layout `read_labels` knows).
    pub labels: PathBuf,
    /// Image folder, if not the layout's default beside the table.
    #[serde(default)]
    pub images: Option<PathBuf>,
    /// Licence of the photos and grades, as its holder states it.
    pub licence: String,
    /// Whether that licence lets a model trained on it be used and shared openly (CC BY, CC0).
    #[serde(default)]
    pub open_licence: bool,
    /// Draws per photo per training epoch (1 = once).
    #[serde(default = "one")]
    pub weight: f64,
    /// Pairs of near-duplicate photos (`image_a,image_b,...`) kept on one side of the split;
    /// default: `near_dups.csv` beside the label table, when there is one.
    #[serde(default)]
    pub near_duplicates: Option<PathBuf>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Spec {
    source: Vec<Source>,
}

/// A source with its table read.
#[derive(Debug, Clone)]
pub struct SourceRecords {
    pub source: Source,
    pub layout: Layout,
    pub records: Vec<Record>,
    /// Index pairs (into `records`) of near-duplicates.
    pub near_duplicates: Vec<(usize, usize)>,
}

/// Reads a data spec; paths in it are relative to the spec's folder.
pub fn read_spec(path: &Path) -> Result<Vec<Source>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading data spec {}", path.display()))?;
    let spec: Spec =
        toml::from_str(&text).with_context(|| format!("parsing data spec {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = spec.source;
    for s in &mut out {
        s.labels = base.join(&s.labels);
        s.images = s.images.as_ref().map(|p| base.join(p));
        s.near_duplicates = s.near_duplicates.as_ref().map(|p| base.join(p));
    }
    check(&out).with_context(|| format!("data spec {}", path.display()))?;
    Ok(out)
}

/// A source for a bare `--labels` table: named after its folder; licence from the table's
/// `licence` column when every row agrees, else "unspecified" (not open).
pub fn from_table(labels: &Path, images: Option<&Path>) -> Result<Source> {
    let name = labels
        .canonicalize()
        .ok()
        .and_then(|p| p.parent()?.file_name()?.to_str().map(str::to_owned))
        .unwrap_or_else(|| "data".to_owned());
    let mut rdr = csv::Reader::from_path(labels)
        .with_context(|| format!("opening label table {}", labels.display()))?;
    let col = rdr
        .headers()?
        .iter()
        .position(|h| h.eq_ignore_ascii_case("licence"));
    let mut licence = None::<String>;
    if let Some(c) = col {
        for row in rdr.records() {
            let v = row?.get(c).unwrap_or("").to_owned();
            match &licence {
                Some(l) if *l != v => {
                    licence = Some("mixed (see the table's licence column)".into());
                    break;
                }
                _ => licence = Some(v),
            }
        }
    }
    Ok(Source {
        name,
        labels: labels.to_path_buf(),
        images: images.map(Path::to_path_buf),
        licence: licence
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| "unspecified".into()),
        open_licence: false,
        weight: 1.0,
        near_duplicates: None,
    })
}

fn check(sources: &[Source]) -> Result<()> {
    ensure!(!sources.is_empty(), "no [[source]] listed");
    for (i, s) in sources.iter().enumerate() {
        ensure!(
            !s.name.is_empty()
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c)),
            "source name `{}` must be letters, digits, `-` or `_`",
            s.name
        );
        ensure!(
            sources[..i].iter().all(|o| o.name != s.name),
            "source `{}` is listed twice",
            s.name
        );
        ensure!(
            s.weight.is_finite() && s.weight > 0.0,
            "source `{}`: weight must be > 0, got {}",
            s.name,
            s.weight
        );
    }
    Ok(())
}

/// Keeps the open-licence sources when `open_only`; an error names what was dropped when none is left.
pub fn filter_licences(sources: Vec<Source>, open_only: bool) -> Result<Vec<Source>> {
    if !open_only {
        return Ok(sources);
    }
    let (open, closed): (Vec<Source>, Vec<Source>) =
        sources.into_iter().partition(|s| s.open_licence);
    if open.is_empty() {
        bail!(
            "--open-licence-only leaves no source: {} (mark a source `open_licence = true` in the data spec only if its licence is open)",
            closed
                .iter()
                .map(|s| format!("{} ({})", s.name, s.licence))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(open)
}

/// Reads every source's table and its near-duplicate pairs.
pub fn read_sources(sources: &[Source]) -> Result<Vec<SourceRecords>> {
    check(sources)?;
    sources
        .iter()
        .map(|s| {
            let (layout, records) = read_labels(&s.labels, s.images.as_deref())
                .with_context(|| format!("source `{}`", s.name))?;
            let dups = s.near_duplicates.clone().or_else(|| {
                let p = s.labels.with_file_name("near_dups.csv");
                p.is_file().then_some(p)
            });
            let near_duplicates = match dups {
                Some(p) => {
                    read_pairs(&p, &records).with_context(|| format!("source `{}`", s.name))?
                }
                None => Vec::new(),
            };
            Ok(SourceRecords {
                source: s.clone(),
                layout,
                records,
                near_duplicates,
            })
        })
        .collect()
}

/// Near-duplicate pairs from a CSV whose first two columns name images of `records`.
fn read_pairs(path: &Path, records: &[Record]) -> Result<Vec<(usize, usize)>> {
    let index: std::collections::HashMap<&str, usize> = records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.id.as_str(), i))
        .collect();
    let mut rdr =
        csv::Reader::from_path(path).with_context(|| format!("opening {}", path.display()))?;
    let mut pairs = Vec::new();
    for (line, row) in rdr.records().enumerate() {
        let row = row.with_context(|| format!("{}:{}: malformed row", path.display(), line + 2))?;
        let (a, b) = (row.get(0).unwrap_or(""), row.get(1).unwrap_or(""));
        match (index.get(a), index.get(b)) {
            (Some(&i), Some(&j)) => pairs.push((i, j)),
            _ => bail!(
                "{}:{}: `{a}` or `{b}` is not in the label table",
                path.display(),
                line + 2
            ),
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn a_spec_reads_relative_paths_near_duplicates_and_licences() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "a/labels.csv",
            "image,level\nx.jpg,0\ny.jpg,2\nz.jpg,1\n",
        );
        write(
            d.path(),
            "a/near_dups.csv",
            "image_a,image_b,cosine\nx.jpg,z.jpg,0.99\n",
        );
        write(
            d.path(),
            "b/labels.csv",
            "image,level,licence\np.jpg,0,research only\nq.jpg,3,research only\n",
        );
        let spec = write(
            d.path(),
            "spec.toml",
            "[[source]]\nname = 'a'\nlabels = 'a/labels.csv'\nlicence = 'CC BY 4.0'\nopen_licence = true\n\
             [[source]]\nname = 'b'\nlabels = 'b/labels.csv'\nlicence = 'research only'\nweight = 2.5\n",
        );
        let s = read_spec(&spec).unwrap();
        assert_eq!(s[0].labels, d.path().join("a/labels.csv"));
        assert_eq!((s[0].weight, s[1].weight), (1.0, 2.5));
        let r = read_sources(&s).unwrap();
        assert_eq!(r[0].near_duplicates, vec![(0, 2)]);
        assert!(r[1].near_duplicates.is_empty());
        let open = filter_licences(s.clone(), true).unwrap();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].name, "a");
        let t = from_table(&d.path().join("b/labels.csv"), None).unwrap();
        assert_eq!(
            (t.name.as_str(), t.licence.as_str()),
            ("b", "research only")
        );
        assert!(!t.open_licence);
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "a/labels.csv", "image,level\nx.jpg,0\n");
        let err = |text: &str| {
            let p = write(d.path(), "spec.toml", text);
            format!(
                "{:#}",
                read_spec(&p)
                    .and_then(|s| read_sources(&s).map(|_| ()))
                    .unwrap_err()
            )
        };
        let src = "[[source]]\nname = 'a'\nlabels = 'a/labels.csv'\nlicence = 'x'\n";
        assert!(err(&format!("{src}{src}")).contains("listed twice"));
        assert!(err(&src.replace("licence = 'x'", "licence = 'x'\nweight = 0")).contains("weight"));
        assert!(err(&src.replace("'a'\nlabels", "'a b'\nlabels")).contains("source name"));
        assert!(err(&src.replace("a/labels.csv", "nope.csv")).contains("source `a`"));
        assert!(err("[[source]]\nname = 'a'\n").contains("labels"));
        write(
            d.path(),
            "a/near_dups.csv",
            "image_a,image_b\nx.jpg,gone.jpg\n",
        );
        assert!(err(src).contains("gone.jpg"));
        let closed = vec![from_table(&d.path().join("a/labels.csv"), None).unwrap()];
        let e = format!("{:#}", filter_licences(closed, true).unwrap_err());
        assert!(
            e.contains("leaves no source") && e.contains("a (unspecified)"),
            "{e}"
        );
    }
}
