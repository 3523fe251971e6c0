//! `kiln plan`: the variants in build order, as a table and a parent tree,
//! or as JSON.

use std::fmt::Write;

use kiln_build::Action;
use kiln_plan::Plan;
use serde::Serialize;

use crate::Outcome;
use crate::cli::{PlanArgs, PlanFormat};
use crate::report::Style;

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Build => "build",
        Action::Cached => "cached",
    }
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    variants: Vec<JsonVariant<'a>>,
}

#[derive(Serialize)]
struct JsonVariant<'a> {
    name: &'a str,
    image: &'a str,
    keys: serde_json::Map<String, serde_json::Value>,
    parent: Option<&'a str>,
    digest: String,
    action: Action,
}

pub fn run(args: &PlanArgs, style: Style) -> Outcome {
    let selection = crate::build_cmd::selection(&args.select);
    let (ws, plan) =
        crate::build_cmd::open(&args.dir, args.cache_dir.as_deref(), &selection, style)?;
    let actions = ws.actions(&plan);
    let format = if args.json {
        PlanFormat::Json
    } else {
        args.format
    };
    Ok(match format {
        PlanFormat::Json => json(&plan, &actions),
        PlanFormat::Table => table(&plan, &actions),
        PlanFormat::GithubMatrix => github_matrix(&plan, &actions),
        PlanFormat::Markdown => markdown(&plan, &actions),
    })
}

/// `{"dimension": "key", …}`.
fn keys_json(v: &kiln_plan::Variant) -> serde_json::Map<String, serde_json::Value> {
    v.keys
        .iter()
        .map(|(d, k)| (d.clone(), serde_json::Value::String(k.clone())))
        .collect()
}

/// The `--only` words that select exactly `v`: its image and every key.
fn only_words(v: &kiln_plan::Variant) -> String {
    std::iter::once(v.image.as_str())
        .chain(v.keys.iter().map(|(_, k)| k.as_str()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The stage of each variant to build: 0 when nothing it builds on is
/// built in this run, else one more than its parent's.
fn stages(plan: &Plan, actions: &[Action]) -> Vec<Option<usize>> {
    let mut out: Vec<Option<usize>> = vec![None; plan.variants.len()];
    // Plan order has every parent before its children.
    for (i, v) in plan.variants.iter().enumerate() {
        if actions[i] != Action::Build {
            continue;
        }
        out[i] = Some(v.parent.and_then(|p| out[p]).map_or(0, |s| s + 1));
    }
    out
}

fn github_matrix(plan: &Plan, actions: &[Action]) -> String {
    let stage_of = stages(plan, actions);
    let mut include = Vec::new();
    let mut stages: Vec<Vec<serde_json::Value>> = Vec::new();
    for (i, v) in plan.variants.iter().enumerate() {
        let Some(stage) = stage_of[i] else { continue };
        let entry = serde_json::json!({
            "variant": v.name,
            "image": v.image,
            "keys": keys_json(v),
            "parent": v.parent.map(|p| plan.variants[p].name.as_str()),
            "digest": v.digest.to_hex(),
            "only": only_words(v),
            "stage": stage,
        });
        if stages.len() <= stage {
            stages.resize_with(stage + 1, Vec::new);
        }
        stages[stage].push(entry.clone());
        include.push(entry);
    }
    let stages: Vec<serde_json::Value> = stages
        .into_iter()
        .map(|s| serde_json::json!({ "include": s }))
        .collect();
    let mut s = serde_json::to_string(&serde_json::json!({ "include": include, "stages": stages }))
        .expect("plain data serializes");
    s.push('\n');
    s
}

fn markdown(plan: &Plan, actions: &[Action]) -> String {
    let mut out = String::from("| Variant | Image | Keys | Builds on | Action | Input digest |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    let cell = |s: &str| s.replace('|', "\\|");
    for (v, a) in plan.variants.iter().zip(actions) {
        let keys = v
            .keys
            .iter()
            .map(|(d, k)| format!("{d}={k}"))
            .collect::<Vec<_>>()
            .join(", ");
        let parent = v.parent.map_or_else(
            || "-".to_owned(),
            |p| format!("`{}`", plan.variants[p].name),
        );
        let action = match a {
            Action::Build => "**build**",
            Action::Cached => "cached",
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | `{}` |",
            cell(&v.name),
            cell(&v.image),
            if keys.is_empty() {
                "-".to_owned()
            } else {
                cell(&keys)
            },
            parent,
            action,
            v.digest.short()
        );
    }
    let n = plan.variants.len();
    let build = actions
        .iter()
        .filter(|a| matches!(a, Action::Build))
        .count();
    let _ = writeln!(
        out,
        "\n{n} variant{}: **{build} to build**, {} cached.",
        if n == 1 { "" } else { "s" },
        n - build
    );
    out
}

fn json(plan: &Plan, actions: &[Action]) -> String {
    let variants = plan
        .variants
        .iter()
        .zip(actions)
        .map(|(v, &action)| JsonVariant {
            name: &v.name,
            image: &v.image,
            keys: keys_json(v),
            parent: v.parent.map(|p| plan.variants[p].name.as_str()),
            digest: v.digest.to_hex(),
            action,
        })
        .collect();
    let mut s =
        serde_json::to_string_pretty(&JsonPlan { variants }).expect("plain data serializes");
    s.push('\n');
    s
}

fn table(plan: &Plan, actions: &[Action]) -> String {
    let header = ["VARIANT", "IMAGE", "KEYS", "PARENT", "DIGEST", "ACTION"];
    let rows: Vec<[String; 6]> = plan
        .variants
        .iter()
        .zip(actions)
        .map(|(v, a)| {
            let keys = if v.keys.is_empty() {
                "-".to_string()
            } else {
                v.keys
                    .iter()
                    .map(|(d, k)| format!("{d}={k}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let parent = match (v.parent, &v.settings.base) {
                (Some(p), _) => plan.variants[p].name.clone(),
                (
                    None,
                    kiln_config::settings::Base::Bootstrap {
                        distribution,
                        suite,
                        variant,
                    },
                ) => {
                    format!("{}:{suite} ({})", distribution.name(), variant.name())
                }
                (None, kiln_config::settings::Base::Image(_)) => "-".to_string(),
            };
            [
                v.name.clone(),
                v.image.clone(),
                keys,
                parent,
                v.digest.short(),
                action_name(*a).to_string(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[&str]| {
        let mut l = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                let _ = write!(l, "{c:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut out, &header);
    for r in &rows {
        line(&mut out, &r.each_ref().map(String::as_str));
    }
    out.push('\n');
    // The parent tree.
    for (i, v) in plan.variants.iter().enumerate() {
        if v.parent.is_none() {
            tree_lines(plan, i, "", true, true, &mut out);
        }
    }
    let n = plan.variants.len();
    let build = actions
        .iter()
        .filter(|a| matches!(a, Action::Build))
        .count();
    let _ = writeln!(
        out,
        "\n{n} variant{}: {build} to build, {} cached",
        if n == 1 { "" } else { "s" },
        n - build
    );
    out
}

fn tree_lines(plan: &Plan, id: usize, prefix: &str, last: bool, root: bool, out: &mut String) {
    let v = &plan.variants[id];
    if root {
        let _ = writeln!(out, "{}", v.name);
    } else {
        let _ = writeln!(
            out,
            "{prefix}{}{}",
            if last { "└── " } else { "├── " },
            v.name
        );
    }
    let children: Vec<usize> = plan
        .variants
        .iter()
        .enumerate()
        .filter(|(_, c)| c.parent == Some(id))
        .map(|(i, _)| i)
        .collect();
    let child_prefix = if root {
        String::new()
    } else {
        format!("{prefix}{}", if last { "    " } else { "│   " })
    };
    for (k, &c) in children.iter().enumerate() {
        tree_lines(plan, c, &child_prefix, k + 1 == children.len(), false, out);
    }
}
