//! Section H's history, built cheaply: the files of one real finished
//! execution, stamped again under new ids.
//!
//! An execution's data directory (`<data root>/<executor id>/<execution id>/`)
//! holds `record.json` (which names the execution: `execution_id`),
//! `result.json` (its end), `serial.log`, `stdout` and `firecracker.log`; the
//! runtime files (`vm.json`, the config drive, the socket) are gone once it
//! ended. A copy is those files with `execution_id` changed, which is all a
//! restarted executor's recovery scan and `fcexec ps` read.

use std::ffi::OsString;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// The files of one finished execution.
pub struct Template {
    /// Every file but the record: name and content.
    files: Vec<(OsString, Vec<u8>)>,
    /// `record.json`, parsed.
    record: serde_json::Value,
}

/// The id of the `k`-th copy: `h00000`, `h00001`, ...
pub fn copy_id(k: usize) -> String {
    format!("h{k:05}")
}

impl Template {
    /// Reads the files of the finished execution in `dir`.
    pub fn read(dir: &Path) -> Result<Template, String> {
        let err = |e: std::io::Error| format!("{}: {e}", dir.display());
        let (mut files, mut record) = (Vec::new(), None);
        for entry in std::fs::read_dir(dir).map_err(err)? {
            let entry = entry.map_err(err)?;
            if !entry.file_type().map_err(err)?.is_file() {
                continue;
            }
            let content = std::fs::read(entry.path()).map_err(err)?;
            if entry.file_name() == "record.json" {
                record = Some(serde_json::from_slice(&content).map_err(|e| e.to_string())?);
            } else {
                files.push((entry.file_name(), content));
            }
        }
        let record = record.ok_or_else(|| format!("no record.json in {}", dir.display()))?;
        if !files.iter().any(|(name, _)| name == "result.json") {
            return Err(format!("no result.json in {}", dir.display()));
        }
        Ok(Template { files, record })
    }

    /// The file names of the template, for the report.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .files
            .iter()
            .map(|(n, _)| n.to_string_lossy().into_owned())
            .collect();
        names.push("record.json".into());
        names.sort();
        names
    }

    /// Writes copies `from..to` (ids [`copy_id`]) into `executor_dir`.
    pub fn stamp(&self, executor_dir: &Path, from: usize, to: usize) -> Result<(), String> {
        let mut record = self.record.clone();
        for k in from..to {
            let id = copy_id(k);
            let dir = executor_dir.join(&id);
            let err = |e: std::io::Error| format!("{}: {e}", dir.display());
            DirBuilder::new().mode(0o700).create(&dir).map_err(err)?;
            record["execution_id"] = serde_json::Value::String(id);
            let json = serde_json::to_vec_pretty(&record).map_err(|e| e.to_string())?;
            std::fs::write(dir.join("record.json"), json).map_err(err)?;
            for (name, content) in &self.files {
                std::fs::write(dir.join(name), content).map_err(err)?;
            }
        }
        Ok(())
    }
}
