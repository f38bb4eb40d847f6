//! What the end-to-end tests of the whole local stack share.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_yaml::Value as Yaml;

/// The project's template with quick retries (a 3 s work-queue visibility timeout and process
/// timeout), the process function's `Properties` further changed by `edit`, written for the
/// test `name`.
pub fn quick_retry_template(
    name: &str,
    edit: impl FnOnce(&mut Yaml) -> Result<()>,
) -> Result<PathBuf> {
    let root = tally_local::repo_root();
    let mut doc: Yaml =
        serde_yaml::from_str(&std::fs::read_to_string(root.join("template.yaml"))?)?;
    let resources = doc.get_mut("Resources").context("Resources")?;
    resources["WorkQueue"]["Properties"]["VisibilityTimeout"] = Yaml::from(3);
    let process = &mut resources["ProcessFunction"]["Properties"];
    process["Timeout"] = Yaml::from(3);
    edit(process)?;
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("template-{name}.yaml"));
    std::fs::write(&path, serde_yaml::to_string(&doc)?)?;
    Ok(path)
}
