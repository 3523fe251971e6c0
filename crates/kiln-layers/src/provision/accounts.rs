//! `users`: groups and accounts made by the root's own `groupadd`,
//! `useradd` and `usermod` (the `passwd` package), their password hashes
//! (written into `/etc/shadow` directly, so a hash is never on a command
//! line) and `authorized_keys`; and the root's account databases, read for
//! names.

use kiln_config::settings::UserSpec;

use kiln_dpkg::sandbox::RunOptions;

use super::{Log, run_in_root};
use crate::error::Error;
use crate::root::RootDir;

/// An account of the root's `/etc/passwd`.
#[derive(Debug, Clone)]
pub(crate) struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// The root's `/etc/passwd` and `/etc/group` (never the host's).
#[derive(Debug, Default)]
pub(crate) struct Accounts {
    users: Vec<User>,
    groups: Vec<(String, u32)>,
}

impl Accounts {
    pub(crate) fn read(root: &RootDir) -> Result<Self, Error> {
        let text = |rel: &str| -> Result<String, Error> {
            Ok(root
                .read(rel)?
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default())
        };
        let mut out = Self::default();
        for line in text("etc/passwd")?.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if let [name, _, uid, gid, _, home, ..] = fields[..] {
                if let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse()) {
                    out.users.push(User {
                        name: name.to_owned(),
                        uid,
                        gid,
                        home: home.to_owned(),
                    });
                }
            }
        }
        for line in text("etc/group")?.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if let [name, _, gid, ..] = fields[..] {
                if let Ok(gid) = gid.parse() {
                    out.groups.push((name.to_owned(), gid));
                }
            }
        }
        Ok(out)
    }

    pub(crate) fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    /// The uid of a user name, or of a number written as such.
    pub(crate) fn uid(&self, name: &str) -> Option<u32> {
        name.parse().ok().or_else(|| self.user(name).map(|u| u.uid))
    }

    /// The gid of a group name, or of a number written as such.
    pub(crate) fn gid(&self, name: &str) -> Option<u32> {
        name.parse().ok().or_else(|| {
            self.groups
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, gid)| *gid)
        })
    }
}

/// Creates (or, when they exist, updates) each account.
///
/// Missing groups named as primary or supplementary groups are created
/// first (system groups for a system account). A new account gets a home
/// folder (from `/etc/skel`) and, without `group`, a group of its own name.
/// An existing account keeps its home's content; its uid, primary group,
/// shell and home path are changed as given and the supplementary groups
/// added. The password hash goes straight into `/etc/shadow` (a command
/// line is readable by every user of the host through `/proc`), never
/// logged or returned; `epoch` dates the change, as `usermod` does with
/// `SOURCE_DATE_EPOCH`.
pub(super) fn users(
    root: &RootDir,
    users: &[UserSpec],
    base_env: &[(&str, &str)],
    epoch: Option<i64>,
    log: &Log<'_>,
) -> Result<(), Error> {
    for user in users {
        let accounts = Accounts::read(root)?;
        for group in user.group.iter().chain(&user.groups) {
            if accounts.gid(group).is_none() {
                let mut argv = vec!["/usr/sbin/groupadd"];
                if user.system {
                    argv.push("--system");
                }
                argv.push(group);
                let step = format!("groupadd {group}");
                run_in_root(
                    root,
                    &argv,
                    &RunOptions::new(&step).exact_env(base_env),
                    log,
                )?;
            }
        }
        let uid = user.uid.map(|u| u.to_string());
        let groups = user.groups.join(",");
        let exists = accounts.user(&user.name).is_some();
        let mut argv: Vec<&str> = Vec::new();
        if exists {
            argv.push("/usr/sbin/usermod");
            if let Some(uid) = &uid {
                argv.extend(["--uid", uid]);
            }
            if let Some(group) = &user.group {
                argv.extend(["--gid", group]);
            }
            if !groups.is_empty() {
                argv.extend(["--append", "--groups", &groups]);
            }
        } else {
            argv.extend(["/usr/sbin/useradd", "--create-home"]);
            if user.system {
                argv.push("--system");
            }
            if let Some(uid) = &uid {
                argv.extend(["--uid", uid]);
            }
            match &user.group {
                Some(group) => argv.extend(["--gid", group]),
                None => argv.push("--user-group"),
            }
            if !groups.is_empty() {
                argv.extend(["--groups", &groups]);
            }
        }
        if let Some(shell) = &user.shell {
            argv.extend(["--shell", shell]);
        }
        if let Some(home) = &user.home {
            argv.extend(["-d", home]);
        }
        if !exists || argv.len() > 1 {
            argv.push(&user.name);
            let step = format!(
                "{} {}",
                if exists { "usermod" } else { "useradd" },
                user.name
            );
            run_in_root(
                root,
                &argv,
                &RunOptions::new(&step).exact_env(base_env),
                log,
            )?;
        }
        if let Some(hash) = &user.password {
            set_password(root, &user.name, hash, epoch)?;
        }
        if !user.ssh_authorized_keys.is_empty() {
            authorized_keys(root, user)?;
        }
        log(&format!(
            "{} {}",
            if exists { "updated" } else { "created" },
            user.name
        ));
    }
    Ok(())
}

/// Sets the password field of `name` in the root's `/etc/shadow` to `hash`
/// and its last-change day to `epoch`'s (today's without one), as
/// `usermod --password` does, keeping the file's mode and owner.
fn set_password(root: &RootDir, name: &str, hash: &str, epoch: Option<i64>) -> Result<(), Error> {
    const SHADOW: &str = "etc/shadow";
    let missing = || Error::NoShadowEntry {
        user: name.to_owned(),
    };
    if hash.contains([':', '\n']) {
        return Err(Error::InvalidPasswordHash {
            user: name.to_owned(),
        });
    }
    let (Some(text), Some((mode, owner))) = (root.read(SHADOW)?, root.mode_owner(SHADOW)?) else {
        return Err(missing());
    };
    let text = String::from_utf8_lossy(&text);
    let seconds = epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
    });
    // usermod: day 0 would force a password change at first login, so
    // aging is left off instead.
    let day = match seconds / 86_400 {
        0 => String::new(),
        day => day.to_string(),
    };
    let mut found = false;
    let mut out = String::with_capacity(text.len() + hash.len());
    for line in text.lines() {
        let mut fields: Vec<&str> = line.split(':').collect();
        if fields.first() == Some(&name) && fields.len() >= 3 {
            fields[1] = hash;
            fields[2] = &day;
            found = true;
        }
        out.push_str(&fields.join(":"));
        out.push('\n');
    }
    if !found {
        return Err(missing());
    }
    root.write(SHADOW, mode, owner, out.as_bytes())
}

/// Writes `~/.ssh/authorized_keys` (0600 in a 0700 `.ssh`, both the
/// user's), replacing what was there.
fn authorized_keys(root: &RootDir, user: &UserSpec) -> Result<(), Error> {
    let accounts = Accounts::read(root)?;
    let Some(account) = accounts.user(&user.name) else {
        return Err(Error::UnknownAccount {
            path: "~/.ssh/authorized_keys".to_owned(),
            kind: "owner",
            name: user.name.clone(),
        });
    };
    let owner = (account.uid, account.gid);
    let ssh = format!("{}/.ssh", account.home.trim_end_matches('/'));
    root.create_dirs(&ssh, 0o700)?;
    root.set_dir_owner(&ssh, 0o700, owner)?;
    let mut keys = user.ssh_authorized_keys.join("\n");
    keys.push('\n');
    root.write(
        &format!("{ssh}/authorized_keys"),
        0o600,
        owner,
        keys.as_bytes(),
    )
}
