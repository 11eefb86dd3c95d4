//! The command the fcexec guest agent runs (extensions `command`, `env`,
//! `working_dir`, `user`): decoded here, types only; the agent resolves
//! the user and the program inside the guest's root file system.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{lookup, path, string_param, wrong_type, SpecError};

/// What the guest agent runs, from the request's engine spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    /// The program and its arguments (`command`); the program is looked
    /// up on the job's `PATH` inside the root file system.
    pub argv: Vec<String>,
    /// Environment variables, in order (`env`: an object, or an array of
    /// `"NAME=value"` strings).
    pub env: Vec<(String, String)>,
    /// The working directory inside the root file system (`working_dir`,
    /// absolute; default `/`).
    pub working_dir: Option<String>,
    /// The user (`user`): a name from the root file system's
    /// `/etc/passwd`, or `uid` or `uid:gid`; default root.
    pub user: Option<String>,
}

/// Decodes the command extensions; `None` when `command` is absent.
pub(super) fn decode(p: &Map<String, Value>) -> Result<Option<Command>, SpecError> {
    let others = ["env", "working_dir", "user"];
    let Some(value) = lookup(p, "command").filter(|v| !v.is_null()) else {
        if others
            .iter()
            .any(|n| lookup(p, n).is_some_and(|v| !v.is_null()))
        {
            return Err(SpecError::MissingParam {
                field: path("command"),
                fix: "env, working_dir and user go with a command: give one, such as \
                      [\"/bin/sh\", \"-c\", \"echo hi\"]",
            });
        }
        return Ok(None);
    };
    let argv = match value {
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .filter(|argv| !argv[0].is_empty())
            .ok_or_else(|| {
                wrong_type(
                    "command",
                    value,
                    "an array of strings whose first is the program",
                )
            })?,
        _ => {
            return Err(wrong_type(
                "command",
                value,
                "a non-empty array of strings, e.g. [\"/bin/sh\", \"-c\", \"echo hi\"]",
            ))
        }
    };
    let env = match lookup(p, "env") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                wrong_type("env", &Value::Object(map.clone()), "an object of strings")
            })?,
        Some(v @ Value::Array(items)) => items
            .iter()
            .map(|i| {
                i.as_str()?
                    .split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                wrong_type(
                    "env",
                    v,
                    "an object of strings, or an array of \"NAME=value\" strings",
                )
            })?,
        Some(v) => {
            return Err(wrong_type(
                "env",
                v,
                "an object of strings, or an array of \"NAME=value\" strings",
            ))
        }
    };
    if let Some((name, _)) = env
        .iter()
        .find(|(k, _)| k.is_empty() || k.contains(['=', '\0']))
    {
        return Err(wrong_type(
            "env",
            &Value::String(name.clone()),
            "names without '=' or NUL",
        ));
    }
    let working_dir = string_param(p, "working_dir")?;
    if let Some(dir) = working_dir.as_deref().filter(|d| !d.starts_with('/')) {
        return Err(wrong_type(
            "working_dir",
            &Value::String(dir.to_string()),
            "an absolute path",
        ));
    }
    Ok(Some(Command {
        argv,
        env,
        working_dir,
        user: string_param(p, "user")?,
    }))
}
