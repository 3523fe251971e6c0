//! `kiln plan`: the variants in build order, as a table and a parent tree,
//! or as JSON.

use std::fmt::Write;

use kiln_build::Action;
use kiln_plan::Plan;
use serde::Serialize;

use crate::Outcome;
use crate::cli::PlanArgs;
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
    if args.json {
        Ok(json(&plan, &actions))
    } else {
        Ok(table(&plan, &actions))
    }
}

fn json(plan: &Plan, actions: &[Action]) -> String {
    let variants = plan
        .variants
        .iter()
        .zip(actions)
        .map(|(v, &action)| JsonVariant {
            name: &v.name,
            image: &v.image,
            keys: v
                .keys
                .iter()
                .map(|(d, k)| (d.clone(), serde_json::Value::String(k.clone())))
                .collect(),
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
