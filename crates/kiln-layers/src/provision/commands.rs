//! `services` and `run`: commands run in the root.

use kiln_config::settings::{RunBody, RunStep, Services};
use kiln_config::{ImageSettings, TreeInputs};

use kiln_dpkg::sandbox::RunOptions;

use super::{Log, ProvisionContext, run_in_root};
use crate::error::Error;
use crate::root::RootDir;

/// Where `systemctl` may be, in order.
const SYSTEMCTL: &[&str] = &["usr/bin/systemctl", "bin/systemctl"];

/// Enables, then disables, each unit with the root's own `systemctl`,
/// which edits the unit symlinks offline (`SYSTEMD_OFFLINE=1`: nothing
/// talks to a running systemd).
pub(super) fn services(
    root: &RootDir,
    services: &Services,
    base_env: &[(&str, &str)],
    log: &Log<'_>,
) -> Result<(), Error> {
    let mut systemctl = None;
    for path in SYSTEMCTL {
        if root.exists(path)? {
            systemctl = Some(format!("/{path}"));
            break;
        }
    }
    let actions = services
        .enable
        .iter()
        .map(|u| ("enable", u))
        .chain(services.disable.iter().map(|u| ("disable", u)));
    let mut env = base_env.to_vec();
    env.push(("SYSTEMD_OFFLINE", "1"));
    for (action, unit) in actions {
        let Some(systemctl) = &systemctl else {
            return Err(Error::NoSystemd {
                action,
                unit: unit.clone(),
            });
        };
        let step = format!("systemctl {action} {unit}");
        run_in_root(
            root,
            &[systemctl, action, unit],
            &RunOptions::new(&step).exact_env(&env),
            log,
        )?;
    }
    Ok(())
}

/// One `run` script of a variant.
pub(super) struct Script<'a> {
    /// Its position in `run` (names its file in `/tmp`).
    pub(super) index: usize,
    /// The step's name, `run:<name>`.
    pub(super) step: &'a str,
    /// What to run.
    pub(super) run: &'a RunStep,
    /// The environment every command in the root gets.
    pub(super) base_env: &'a [(&'a str, &'a str)],
}

/// Writes the script of `run` to the root's `/tmp`, runs it there with
/// `/bin/sh` and removes it, whatever the outcome.
pub(super) fn run_script(
    root: &RootDir,
    script: &Script<'_>,
    settings: &ImageSettings,
    ctx: &ProvisionContext,
    inputs: &TreeInputs,
    log: &Log<'_>,
) -> Result<(), Error> {
    let Script {
        index,
        step,
        run,
        base_env,
    } = *script;
    let script = match &run.body {
        RunBody::Inline(text) => text.clone().into_bytes(),
        RunBody::Script(path) => inputs.read(path)?,
    };
    if !root.exists("tmp")? {
        root.create_dirs("tmp", 0o1777)?;
    }
    let rel = format!("tmp/kiln-run-{}-{index}.sh", std::process::id());
    root.write(&rel, 0o700, (0, 0), &script)?;
    let env = script_env(base_env, settings, ctx);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let in_root = format!("/{rel}");
    let options = RunOptions::new(step)
        .exact_env(&env)
        .network(run.network)
        .cancel(&ctx.cancel);
    let result = run_in_root(root, &["/bin/sh", &in_root], &options, log);
    let removed = root.remove_all(&rel);
    result?;
    removed.map(|_| ())
}

/// The environment of a `run` script: the base, `env`, then `KILN_*`.
fn script_env(
    base_env: &[(&str, &str)],
    settings: &ImageSettings,
    ctx: &ProvisionContext,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |key: String, value: String| {
        env.retain(|(k, _)| *k != key);
        env.push((key, value));
    };
    for (key, value) in base_env {
        set((*key).to_owned(), (*value).to_owned());
    }
    for (key, value) in &settings.env {
        if !key.starts_with("KILN_") {
            set(key.clone(), value.clone());
        }
    }
    set("KILN_IMAGE".to_owned(), ctx.image.clone());
    set("KILN_VARIANT".to_owned(), ctx.variant.clone());
    for (dimension, key) in &ctx.keys {
        let name = format!("KILN_{}", dimension.to_uppercase().replace('-', "_"));
        set(name, key.clone());
    }
    set("KILN_PACKAGES".to_owned(), ctx.packages.join(" "));
    env
}

/// `/usr/sbin/policy-rc.d` answering 101 ("action forbidden") while
/// scripts run, so nothing they install starts a service; a file already
/// there is put back afterwards.
pub(super) struct PolicyRcD {
    saved: Option<Vec<u8>>,
}

const POLICY_RC_D: &str = "usr/sbin/policy-rc.d";

impl PolicyRcD {
    pub(super) fn install(root: &RootDir) -> Result<Self, Error> {
        let saved = match root.lstat(POLICY_RC_D)? {
            Some(_) => root.read(POLICY_RC_D)?,
            None => None,
        };
        root.write(
            POLICY_RC_D,
            0o755,
            (0, 0),
            b"#!/bin/sh\n# Written by kiln while running scripts.\nexit 101\n",
        )?;
        Ok(Self { saved })
    }

    pub(super) fn remove(self, root: &RootDir) -> Result<(), Error> {
        match &self.saved {
            Some(content) => root.write(POLICY_RC_D, 0o755, (0, 0), content),
            None => root.remove_all(POLICY_RC_D).map(|_| ()),
        }
    }
}
