//! The report files: `drill-<group>-<UTC start, yyyymmddThhmmssZ>.{md,json,svg}` in the
//! directory the operator names. An existing file is never overwritten: each file is written
//! under a temporary name and then hard-linked to its own name, which fails if that name
//! exists, so that two netctl runs cannot clobber each other and a crash leaves no half-written
//! report under the real name. A file that already holds exactly this content counts as
//! written (`netctl drill --last` after `netctl drill`).

use std::io::Write as _;
use std::path::{Path, PathBuf};

use isthmus_api::DrillReport;

use super::{markdown, svg, utc};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Markdown,
    Json,
    Svg,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Markdown, Kind::Json, Kind::Svg];

    fn extension(self) -> &'static str {
        match self {
            Kind::Markdown => "md",
            Kind::Json => "json",
            Kind::Svg => "svg",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("{} already exists and holds another report: not overwriting it (move it away, or write elsewhere with --report DIR)", .0.display())]
    Exists(PathBuf),
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `drill-remote-20261126T150418Z.svg`. The group name comes from agentd; anything but the
/// characters config names may use becomes `_`, so the name stays one plain file name.
pub fn file_name(r: &DrillReport, kind: Kind) -> String {
    let group: String = r
        .group
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!(
        "drill-{group}-{}.{}",
        utc::compact(r.started_unix_ms),
        kind.extension()
    )
}

/// The content of each file.
pub fn render(r: &DrillReport, kind: Kind) -> String {
    match kind {
        Kind::Markdown => markdown::render(r),
        Kind::Svg => svg::render(r),
        Kind::Json => {
            let mut json = serde_json::to_string_pretty(r).unwrap_or_default();
            json.push('\n');
            json
        }
    }
}

/// Writes the three files into `dir` (created if needed) and answers their paths. Nothing is
/// written if any of them exists with other content.
pub fn write(dir: &Path, r: &DrillReport) -> Result<Vec<PathBuf>, FilesError> {
    std::fs::create_dir_all(dir).map_err(io("creating the report directory", dir))?;
    let files: Vec<(PathBuf, String)> = Kind::ALL
        .iter()
        .map(|&k| (dir.join(file_name(r, k)), render(r, k)))
        .collect();
    // Check all three first, so that a clash leaves no partial set behind.
    for (path, content) in &files {
        if !same_or_absent(path, content).map_err(io("reading", path))? {
            return Err(FilesError::Exists(path.clone()));
        }
    }
    for (path, content) in &files {
        if path.exists() {
            continue; // same content, checked above
        }
        write_new(path, content)?;
    }
    Ok(files.into_iter().map(|(p, _)| p).collect())
}

/// Turns an I/O error into one that names what was done to which file.
fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FilesError {
    let path = path.to_path_buf();
    move |source| FilesError::Io {
        action,
        path,
        source,
    }
}

/// Whether `path` is free or already holds `content`.
fn same_or_absent(path: &Path, content: &str) -> std::io::Result<bool> {
    match std::fs::read(path) {
        Ok(existing) => Ok(existing == content.as_bytes()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(e),
    }
}

/// Write under a temporary name in the same directory, then give it its name without
/// replacing anything.
fn write_new(path: &Path, content: &str) -> Result<(), FilesError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io("creating", &tmp))?;
        f.write_all(content.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io("writing", &tmp))?;
        match std::fs::hard_link(&tmp, path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(FilesError::Exists(path.to_path_buf()))
            }
            // A file system without hard links (FAT, some FUSE): a rename, after one more look.
            Err(_) if !path.exists() => std::fs::rename(&tmp, path).map_err(io("renaming", &tmp)),
            Err(e) => Err(io("naming", path)(e)),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::super::fixtures;
    use super::*;

    #[test]
    fn names_carry_the_group_and_the_utc_start() {
        let mut r = fixtures::passed();
        assert_eq!(
            file_name(&r, Kind::Markdown),
            "drill-remote-20261126T150418Z.md"
        );
        assert_eq!(
            file_name(&r, Kind::Json),
            "drill-remote-20261126T150418Z.json"
        );
        r.group = "../../etc/x y".into();
        assert_eq!(
            file_name(&r, Kind::Svg),
            "drill-.._.._etc_x_y-20261126T150418Z.svg"
        );
    }

    #[test]
    fn writes_three_files_into_a_new_directory_and_leaves_no_temporary_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("reports/q4");
        let r = fixtures::passed();
        let paths = write(&dir, &r).unwrap();
        assert_eq!(paths.len(), 3);
        let json: DrillReport =
            serde_json::from_str(&std::fs::read_to_string(&paths[1]).unwrap()).unwrap();
        assert_eq!(json, r);
        assert!(std::fs::read_to_string(&paths[0])
            .unwrap()
            .starts_with("# DR drill report"));
        assert!(std::fs::read_to_string(&paths[2])
            .unwrap()
            .starts_with("<svg"));
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "drill-remote-20261126T150418Z.json",
                "drill-remote-20261126T150418Z.md",
                "drill-remote-20261126T150418Z.svg"
            ]
        );
        // The same report again is already there: nothing to do, no error.
        assert_eq!(write(&dir, &r).unwrap(), paths);
    }

    #[test]
    fn never_overwrites_another_report() {
        let tmp = tempfile::tempdir().unwrap();
        let r = fixtures::passed();
        let svg = tmp.path().join(file_name(&r, Kind::Svg));
        std::fs::write(&svg, "mine").unwrap();
        let err = write(tmp.path(), &r).unwrap_err();
        assert!(matches!(&err, FilesError::Exists(p) if *p == svg), "{err}");
        assert!(err.to_string().contains("not overwriting"), "{err}");
        assert_eq!(std::fs::read_to_string(&svg).unwrap(), "mine");
        // Nothing else was written.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        // Even when the name is taken between the check and the write.
        let md = tmp.path().join(file_name(&r, Kind::Markdown));
        std::fs::write(&md, "racer").unwrap();
        assert!(matches!(
            write_new(&md, "report"),
            Err(FilesError::Exists(_))
        ));
        assert_eq!(std::fs::read_to_string(&md).unwrap(), "racer");
    }

    #[test]
    fn an_unusable_directory_is_a_clear_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("not-a-dir");
        std::fs::write(&file, "").unwrap();
        let err = write(&file.join("sub"), &fixtures::passed()).unwrap_err();
        assert!(
            err.to_string().starts_with("creating the report directory"),
            "{err}"
        );
    }
}
