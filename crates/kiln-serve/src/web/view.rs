//! A job's events (`events.jsonl`, the SSE stream) folded into what its
//! page shows: each variant's state and steps, and the log lines.

use std::fmt::Write as _;

use serde_json::Value;

/// A variant's state on the page: its graph node's class and word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeState {
    /// Waiting for a worker or a parent.
    Queued,
    /// Being built.
    Running,
    /// Built.
    Built,
    /// Its layer was in the store.
    Cached,
    /// A step failed.
    Failed,
    /// A parent did not build.
    Skipped,
    /// Cancelled or out of time.
    Cancelled,
}

impl NodeState {
    /// The word shown beside the icon (state is never colour alone).
    #[must_use]
    pub fn word(self) -> &'static str {
        match self {
            NodeState::Queued => "queued",
            NodeState::Running => "running",
            NodeState::Built => "built",
            NodeState::Cached => "cached",
            NodeState::Failed => "failed",
            NodeState::Skipped => "skipped",
            NodeState::Cancelled => "cancelled",
        }
    }

    /// The icon drawn before the word.
    #[must_use]
    pub fn icon(self) -> &'static str {
        match self {
            NodeState::Queued => "○",
            NodeState::Running => "◐",
            NodeState::Built => "✔",
            NodeState::Cached => "≡",
            NodeState::Failed => "✘",
            NodeState::Skipped => "↷",
            NodeState::Cancelled => "■",
        }
    }

    /// The state of a status word (`built`, `cached`, … as
    /// `VariantStatus::word` writes them, or `queued`/`running`).
    #[must_use]
    pub fn of_word(word: &str) -> Self {
        match word {
            "queued" => NodeState::Queued,
            "running" => NodeState::Running,
            "built" => NodeState::Built,
            "cached" => NodeState::Cached,
            "failed" => NodeState::Failed,
            "skipped" => NodeState::Skipped,
            _ => NodeState::Cancelled,
        }
    }
}

/// One step of a variant, for the timeline.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    /// Its name (`download`, `provision:setup`, `output:squashfs`).
    pub name: String,
    /// When it started (Unix milliseconds).
    pub start: i64,
    /// When it ended, if it did.
    pub end: Option<i64>,
    /// Whether it succeeded (`true` while it runs).
    pub ok: bool,
}

/// A variant of the job.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    /// Its name.
    pub name: String,
    /// Its image.
    pub image: String,
    /// The variant it builds on.
    pub parent: Option<String>,
    /// Its state.
    pub state: NodeState,
    /// The step it is in, while it runs.
    pub step: Option<String>,
    /// Its steps so far.
    pub steps: Vec<Step>,
    /// Bytes of packages ready / to fetch, while it downloads.
    pub download: Option<(u64, u64)>,
}

/// A log line: its event's SSE id, variant and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    /// The event's SSE id (its 1-based position in the stream).
    pub id: usize,
    /// The variant it belongs to (empty for the build's own lines).
    pub variant: String,
    /// The text, with any ANSI colours.
    pub text: String,
}

/// A job's events, folded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct View {
    /// The variants, parents first (the plan's order).
    pub variants: Vec<Variant>,
    /// Every log line.
    pub lines: Vec<Line>,
    /// How many events there were (the last SSE id).
    pub events: usize,
    /// When the first event of the last attempt came (Unix ms).
    pub first: Option<i64>,
    /// When the last event came (Unix ms).
    pub last: Option<i64>,
}

impl View {
    /// Folds the events (one JSON object per line).
    #[must_use]
    pub fn of(events: &str) -> Self {
        let mut view = View::default();
        for (n, line) in events.lines().enumerate() {
            if let Ok(event) = serde_json::from_str::<Value>(line) {
                view.apply(n + 1, &event);
            }
            view.events = n + 1;
        }
        view
    }

    /// The variant `name`.
    #[must_use]
    pub fn variant(&self, name: &str) -> Option<&Variant> {
        self.variants.iter().find(|v| v.name == name)
    }

    /// The running variants with the step each is in.
    #[must_use]
    pub fn running(&self) -> Vec<&Variant> {
        self.variants
            .iter()
            .filter(|v| v.state == NodeState::Running)
            .collect()
    }

    /// Variants that ended, of all.
    #[must_use]
    pub fn progress(&self) -> (usize, usize) {
        let done = self
            .variants
            .iter()
            .filter(|v| !matches!(v.state, NodeState::Queued | NodeState::Running))
            .count();
        (done, self.variants.len())
    }

    fn apply(&mut self, id: usize, e: &Value) {
        let at = e["at"].as_i64();
        let name = e["variant"].as_str().unwrap_or_default();
        if let Some(text) = e["line"].as_str() {
            self.lines.push(Line {
                id,
                variant: name.to_owned(),
                text: text.to_owned(),
            });
        }
        if at.is_some() {
            self.last = at;
        }
        let event = e["event"].as_str().unwrap_or_default();
        if event == "plan_resolved" {
            // A requeued job plans again: its variants start over.
            self.first = at;
            self.variants = e["variants"]
                .as_array()
                .map(|vs| {
                    vs.iter()
                        .map(|v| Variant {
                            name: v["name"].as_str().unwrap_or_default().to_owned(),
                            image: v["image"].as_str().unwrap_or_default().to_owned(),
                            parent: v["parent"].as_str().map(str::to_owned),
                            state: NodeState::Queued,
                            step: None,
                            steps: Vec::new(),
                            download: None,
                        })
                        .collect()
                })
                .unwrap_or_default();
            return;
        }
        let Some(v) = self.variants.iter_mut().find(|v| v.name == name) else {
            return;
        };
        let at = at.unwrap_or_default();
        match event {
            "variant_started" => v.state = NodeState::Running,
            "step_started" => {
                let step = e["step"].as_str().unwrap_or_default().to_owned();
                v.state = NodeState::Running;
                v.steps.push(Step {
                    name: step.clone(),
                    start: at,
                    end: None,
                    ok: true,
                });
                v.step = Some(step);
            }
            "step_finished" => {
                let step = e["step"].as_str().unwrap_or_default();
                if let Some(s) = v
                    .steps
                    .iter_mut()
                    .rev()
                    .find(|s| s.name == step && s.end.is_none())
                {
                    s.end = Some(at);
                    s.ok = e["ok"].as_bool().unwrap_or(true);
                }
                v.step = None;
            }
            "download" => {
                v.download = Some((
                    e["done_bytes"].as_u64().unwrap_or_default(),
                    e["total_bytes"].as_u64().unwrap_or_default(),
                ));
            }
            "variant_finished" => {
                v.state = NodeState::of_word(e["status"].as_str().unwrap_or_default());
                v.step = None;
                v.download = None;
                for s in v.steps.iter_mut().filter(|s| s.end.is_none()) {
                    s.end = Some(at);
                    s.ok = false;
                }
            }
            _ => {}
        }
    }
}

/// Rows of the variant graph: a variant's row is one below its parent's.
#[must_use]
pub fn depths(variants: &[Variant]) -> Vec<usize> {
    let mut depth = vec![0; variants.len()];
    for (i, v) in variants.iter().enumerate() {
        if let Some(p) = &v.parent
            && let Some(j) = variants[..i].iter().position(|u| &u.name == p)
        {
            depth[i] = depth[j] + 1;
        }
    }
    depth
}

/// A line with ANSI SGR colours as HTML: text escaped, colours as
/// `<span class="ansi-…">`; every other escape sequence dropped.
#[must_use]
pub fn ansi_html(text: &str) -> String {
    let mut out = String::new();
    let mut open = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() != Some(&'[') {
                continue;
            }
            chars.next();
            let mut params = String::new();
            let mut fin = '\0';
            for c in chars.by_ref() {
                if c.is_ascii_digit() || c == ';' {
                    params.push(c);
                } else {
                    fin = c;
                    break;
                }
            }
            if fin != 'm' {
                continue;
            }
            if open {
                out.push_str("</span>");
                open = false;
            }
            let classes: Vec<String> = params
                .split(';')
                .filter_map(|p| p.parse::<u8>().ok())
                .filter_map(|p| match p {
                    1 => Some("ansi-bold".to_owned()),
                    30..=37 | 90..=97 => {
                        Some(format!("ansi-fg{}", p % 10 + if p >= 90 { 8 } else { 0 }))
                    }
                    _ => None,
                })
                .collect();
            if !classes.is_empty() {
                out.push_str(&format!("<span class=\"{}\">", classes.join(" ")));
                open = true;
            }
            continue;
        }
        let _ = write!(maud::Escaper::new(&mut out), "{c}");
    }
    if open {
        out.push_str("</span>");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_fold_into_states_steps_and_lines() {
        let events = [
            r#"{"v":1,"at":1000,"event":"plan_resolved","variants":[{"name":"base","image":"base","parent":null},{"name":"app","image":"app","parent":"base"}]}"#,
            r#"{"v":1,"at":1001,"event":"variant_started","variant":"base"}"#,
            r#"{"v":1,"at":1002,"event":"step_started","variant":"base","step":"download","line":"base: download"}"#,
            r#"{"v":1,"at":1500,"event":"step_finished","variant":"base","step":"download","seconds":0.5,"ok":true}"#,
            r#"{"v":1,"at":1600,"event":"variant_finished","variant":"base","status":"cached","line":"base: cached"}"#,
            r#"{"v":1,"at":1700,"event":"step_started","variant":"app","step":"provision:setup","line":"app: provision:setup"}"#,
            "not json",
        ]
        .join("\n");
        let view = View::of(&events);
        assert_eq!(view.events, 7);
        assert_eq!(view.variants.len(), 2);
        let base = view.variant("base").expect("base");
        assert_eq!(base.state, NodeState::Cached);
        assert_eq!(base.steps[0].end, Some(1500));
        let app = view.variant("app").expect("app");
        assert_eq!(app.state, NodeState::Running);
        assert_eq!(app.step.as_deref(), Some("provision:setup"));
        assert_eq!(view.progress(), (1, 2));
        assert_eq!(
            view.lines.iter().map(|l| l.id).collect::<Vec<_>>(),
            [3, 5, 6]
        );
        assert_eq!(depths(&view.variants), [0, 1]);
        assert_eq!((view.first, view.last), (Some(1000), Some(1700)));
    }

    #[test]
    fn ansi_colours_become_spans_and_markup_is_escaped() {
        assert_eq!(
            ansi_html("\u{1b}[1;31mE:\u{1b}[0m <b>&"),
            "<span class=\"ansi-bold ansi-fg1\">E:</span> &lt;b&gt;&amp;"
        );
        assert_eq!(
            ansi_html("\u{1b}[2Kdone\u{1b}[92m ok"),
            "done<span class=\"ansi-fg10\"> ok</span>"
        );
    }
}
