//! Label tables: Kaggle EyePACS (`image,level` + `train/<image>.jpeg`), APTOS (`id_code,diagnosis`
//! + `<id_code>.png`) and drscreen's own `labels.csv` (`image,level[,patient]` + `images/<image>`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use drscreen_core::contract::PositiveClass;
use serde::{Deserialize, Serialize};

/// Which table layout a CSV uses (detected from its header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// Kaggle 2015: `image,level`, images `train/<image>.jpeg`, `10_left`/`10_right` = patient 10.
    Kaggle,
    /// APTOS 2019: `id_code,diagnosis`, images `<id_code>.png` (one eye per patient assumed).
    Aptos,
    /// drscreen / ../shared/data: `image,level` with file names, optional `patient`, images `images/`.
    Drscreen,
}

/// One labelled photo.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Image id as in the table.
    pub id: String,
    pub path: PathBuf,
    /// International clinical DR grade 0-4.
    pub level: u8,
    /// Patient key: both eyes of a patient share it.
    pub patient: String,
    /// The table's `referable` column (grade >= 2 or macular edema), where it has one.
    #[serde(default)]
    pub referable: Option<bool>,
}

/// Which grades count as positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Positive {
    /// Grades 1-4 (the seed).
    AnyDr,
    /// Grades 2-4, or macular edema where the table grades it (its `referable` column).
    ReferableDr,
}

/// The contract's name for the same classes, and back.
impl From<Positive> for PositiveClass {
    fn from(p: Positive) -> Self {
        match p {
            Positive::AnyDr => Self::AnyDr,
            Positive::ReferableDr => Self::ReferableDr,
        }
    }
}

impl From<PositiveClass> for Positive {
    fn from(p: PositiveClass) -> Self {
        match p {
            PositiveClass::AnyDr => Self::AnyDr,
            PositiveClass::ReferableDr => Self::ReferableDr,
        }
    }
}

impl Positive {
    pub fn of(self, level: u8) -> bool {
        match self {
            Positive::AnyDr => level >= 1,
            Positive::ReferableDr => level >= 2,
        }
    }

    /// The label of a record: its table's `referable` column where it has one.
    pub fn of_record(self, r: &Record) -> bool {
        match (self, r.referable) {
            (Positive::ReferableDr, Some(referable)) => referable,
            _ => self.of(r.level),
        }
    }
}

fn has_image_extension(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".jpg", ".jpeg", ".png"].iter().any(|e| lower.ends_with(e))
}

/// Reads a label table. `images` overrides the layout's default image folder.
/// Errors name the file and line: missing columns, grades outside 0-4, an empty table.
pub fn read_labels(csv_path: &Path, images: Option<&Path>) -> Result<(Layout, Vec<Record>)> {
    let mut rdr = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_path(csv_path)
        .with_context(|| format!("opening label table {}", csv_path.display()))?;
    let headers = rdr
        .headers()
        .with_context(|| format!("reading the header of {}", csv_path.display()))?
        .clone();
    let col = |name: &str| headers.iter().position(|h| h.eq_ignore_ascii_case(name));
    let base = csv_path.parent().unwrap_or(Path::new("."));
    let (id_col, level_col, patient_col, layout_guess) = match (col("image"), col("level"), col("id_code"), col("diagnosis")) {
        (Some(i), Some(l), _, _) => (i, l, col("patient"), None),
        (_, _, Some(i), Some(l)) => (i, l, None, Some(Layout::Aptos)),
        _ => bail!(
            "{}: header must have `image,level` (Kaggle / drscreen) or `id_code,diagnosis` (APTOS), found `{}`",
            csv_path.display(),
            headers.iter().collect::<Vec<_>>().join(",")
        ),
    };
    let referable_col = col("referable");
    let mut layout = layout_guess;
    let mut records = Vec::new();
    for (line, row) in rdr.records().enumerate() {
        let line = line + 2;
        let row = row.with_context(|| format!("{}:{line}: malformed row", csv_path.display()))?;
        let id = row.get(id_col).unwrap_or("").to_owned();
        if id.is_empty() {
            bail!("{}:{line}: empty image name", csv_path.display());
        }
        let raw = row.get(level_col).unwrap_or("");
        let level: u8 = match raw.parse() {
            Ok(l) if l <= 4 => l,
            _ => bail!(
                "{}:{line}: grade `{raw}` of {id} is not 0-4",
                csv_path.display()
            ),
        };
        let layout = *layout.get_or_insert(if has_image_extension(&id) {
            Layout::Drscreen
        } else {
            Layout::Kaggle
        });
        let (path, patient) = match layout {
            Layout::Kaggle => {
                let dir = images
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| base.join("train"));
                let patient = id
                    .rsplit_once('_')
                    .map(|(p, _)| p.to_owned())
                    .unwrap_or_else(|| id.clone());
                (dir.join(format!("{id}.jpeg")), patient)
            }
            Layout::Aptos => {
                let dir = images.map(Path::to_path_buf).unwrap_or_else(|| {
                    let t = base.join("train_images");
                    if t.is_dir() {
                        t
                    } else {
                        base.to_path_buf()
                    }
                });
                (dir.join(format!("{id}.png")), id.clone())
            }
            Layout::Drscreen => {
                let dir = images
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| base.join("images"));
                let patient = patient_col
                    .and_then(|c| row.get(c))
                    .filter(|p| !p.is_empty())
                    .unwrap_or(&id)
                    .to_owned();
                (dir.join(&id), patient)
            }
        };
        let referable = match referable_col.and_then(|c| row.get(c)) {
            None | Some("") => None,
            Some("0") => Some(false),
            Some("1") => Some(true),
            Some(v) => bail!(
                "{}:{line}: `referable` of {id} is `{v}`, not 0 or 1",
                csv_path.display()
            ),
        };
        if referable == Some(false) && level >= 2 {
            bail!(
                "{}:{line}: {id} is grade {level} but not referable: grades 2-4 are referable",
                csv_path.display()
            );
        }
        records.push(Record {
            id,
            path,
            level,
            patient,
            referable,
        });
    }
    let Some(layout) = layout else {
        bail!(
            "{}: no labelled images (the table has a header and no rows)",
            csv_path.display()
        );
    };
    let mut seen = HashMap::new();
    for r in &records {
        if let Some(prev) = seen.insert(r.id.clone(), r.level) {
            bail!(
                "{}: image {} is listed twice (grades {prev} and {})",
                csv_path.display(),
                r.id,
                r.level
            );
        }
    }
    Ok((layout, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels.csv");
        std::fs::write(&p, text).unwrap();
        (dir, p)
    }

    #[test]
    fn kaggle_layout_pairs_eyes_by_patient() {
        let (d, p) = table("image,level\n10_left,0\n10_right,2\n13_left,4\n");
        let (layout, r) = read_labels(&p, None).unwrap();
        assert_eq!(layout, Layout::Kaggle);
        assert_eq!(r[1].patient, "10");
        assert_eq!(r[1].path, d.path().join("train/10_right.jpeg"));
    }

    #[test]
    fn aptos_and_drscreen_layouts() {
        let (d, p) = table("id_code,diagnosis\n000c1434d8d7,2\n");
        let (layout, r) = read_labels(&p, None).unwrap();
        assert_eq!((layout, r[0].level), (Layout::Aptos, 2));
        assert_eq!(r[0].path, d.path().join("000c1434d8d7.png"));
        let (d, p) = table("image,level,referable,patient\nPatient001_L.jpg,0,0,Patient001\nPatient001_R.jpg,1,0,Patient001\nX.jpg,3,1,\n");
        let (layout, r) = read_labels(&p, None).unwrap();
        assert_eq!(layout, Layout::Drscreen);
        assert_eq!(r[1].patient, "Patient001");
        assert_eq!(r[2].referable, Some(true));
        assert!(!Positive::ReferableDr.of_record(&r[1]) && Positive::ReferableDr.of_record(&r[2]));
        assert_eq!(r[2].patient, "X.jpg");
        assert_eq!(r[0].path, d.path().join("images/Patient001_L.jpg"));
    }

    #[test]
    fn bad_tables_are_refused_with_the_line() {
        let (_d, p) = table("image,level\n");
        assert!(format!("{:#}", read_labels(&p, None).unwrap_err()).contains("no labelled images"));
        let (_d, p) = table("image,level\na,0\nb,7\n");
        assert!(format!("{:#}", read_labels(&p, None).unwrap_err()).contains(":3: grade `7`"));
        let (_d, p) = table("name,grade\na,0\n");
        assert!(format!("{:#}", read_labels(&p, None).unwrap_err()).contains("header must have"));
        let (_d, p) = table("image,level\na,0\na,1\n");
        assert!(format!("{:#}", read_labels(&p, None).unwrap_err()).contains("listed twice"));
        assert!(read_labels(Path::new("/nonexistent/labels.csv"), None).is_err());
    }
}
