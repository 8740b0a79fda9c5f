//! What the user has chosen on the screen (sort, filter, selection, the open container), the
//! keys that change it, and the loop that feeds events in and draws.

use std::{
    sync::mpsc::{Receiver, TryRecvError},
    time::{Duration, Instant},
};

use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use tokio::sync::oneshot;

use super::{
    model::{Column, Line, Model, Sort},
    player::Player,
    screen::Screen,
    view,
};
use crate::{
    attribution::{MemoryHierarchy, count_dying},
    event::Event,
};

/// Events are taken in (and the screen redrawn, when they changed it) this often.
const FRAME: Duration = Duration::from_millis(250);
/// The screen is redrawn at least this often.
const IDLE_REDRAW: Duration = Duration::from_secs(1);
/// The node's dying memcgs are counted this often (a walk of the hierarchy).
const DYING_EVERY: Duration = Duration::from_secs(5);

/// Where events come from.
pub enum Source {
    /// The pipeline, on another thread; dropping `stop` ends it.
    Live {
        events: Receiver<Event>,
        stop: Option<oneshot::Sender<()>>,
        hierarchy: MemoryHierarchy,
        host: String,
        /// The pipeline ended on its own (a signal, `--duration`, an error).
        ended: bool,
    },
    Replay(Box<Player>),
}

/// What the user chose.
pub struct App {
    pub model: Model,
    pub sort: Sort,
    pub filter: String,
    /// The filter being typed after `/`.
    pub editing: Option<String>,
    /// The selected row's cgroup: the selection follows it when the order changes.
    pub selected: Option<String>,
    /// The container open in the detail view.
    pub detail: Option<String>,
    /// The table as last drawn.
    pub lines: Vec<Line>,
    pub source: Source,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Continue,
    Quit,
}

impl App {
    #[must_use]
    pub fn new(model: Model, source: Source) -> Self {
        Self {
            model,
            sort: Sort::default(),
            filter: String::new(),
            editing: None,
            selected: None,
            detail: None,
            lines: Vec::new(),
            source,
        }
    }

    /// The table in the chosen order, with the selection kept on its row.
    pub fn refresh(&mut self) {
        self.lines = self.model.lines(self.sort, &self.filter);
        let still_there = self
            .selected
            .as_ref()
            .is_some_and(|s| self.lines.iter().any(|l| &l.cgroup == s));
        if !still_there {
            self.selected = self.lines.first().map(|l| l.cgroup.clone());
        }
    }

    #[must_use]
    pub fn selected_index(&self) -> Option<usize> {
        let s = self.selected.as_ref()?;
        self.lines.iter().position(|l| &l.cgroup == s)
    }

    fn move_selection(&mut self, by: isize) {
        if self.lines.is_empty() {
            return;
        }
        let last = self.lines.len() - 1;
        let at = self.selected_index().unwrap_or(0);
        let to = at.saturating_add_signed(by).min(last);
        self.selected = Some(self.lines[to].cgroup.clone());
    }

    /// One key press.
    pub fn key(&mut self, key: KeyEvent) -> Action {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        if key.modifiers.contains(KeyModifiers::ALT) {
            // A terminal sends Alt+x as Esc then x: Esc typed just before a key arrives as one
            // chord, and is meant as both.
            let _ = self.key(KeyEvent::new(KeyCode::Esc, KeyModifiers::NONE));
            return self.key(KeyEvent::new(key.code, key.modifiers - KeyModifiers::ALT));
        }
        if let Some(typed) = self.editing.as_mut() {
            match key.code {
                KeyCode::Enter => {
                    self.filter = self.editing.take().unwrap_or_default();
                }
                KeyCode::Esc => self.editing = None,
                KeyCode::Backspace => {
                    typed.pop();
                }
                KeyCode::Char(c) => typed.push(c),
                _ => {}
            }
            return Action::Continue;
        }
        match key.code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Esc if self.detail.is_some() => self.detail = None,
            KeyCode::Esc => self.filter.clear(),
            KeyCode::Enter if self.detail.is_none() => self.detail.clone_from(&self.selected),
            KeyCode::Char('/') => self.editing = Some(self.filter.clone()),
            KeyCode::Up => self.move_selection(-1),
            KeyCode::Down => self.move_selection(1),
            KeyCode::PageUp => self.move_selection(-10),
            KeyCode::PageDown => self.move_selection(10),
            KeyCode::Home => self.move_selection(isize::MIN),
            KeyCode::End => self.move_selection(isize::MAX),
            KeyCode::Char(c) => self.replay_or_sort_key(c),
            _ => {}
        }
        Action::Continue
    }

    fn replay_or_sort_key(&mut self, c: char) {
        if let Source::Replay(player) = &mut self.source {
            match c {
                ' ' => return player.toggle_pause(),
                '.' => return player.step(&mut self.model),
                '+' => return player.faster(),
                '-' => return player.slower(),
                _ => {}
            }
        }
        if let Some(column) = Column::from_key(c) {
            self.sort = self.sort.pressed(column);
        }
    }

    /// Takes in what arrived; `false` once a live pipeline has ended.
    fn pump(&mut self, elapsed: Duration, last_dying: &mut Option<Instant>) -> bool {
        match &mut self.source {
            Source::Live {
                events,
                hierarchy,
                ended,
                ..
            } => {
                loop {
                    match events.try_recv() {
                        Ok(event) => self.model.apply(&event),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            *ended = true;
                            break;
                        }
                    }
                }
                if last_dying.is_none_or(|t| t.elapsed() >= DYING_EVERY) {
                    *last_dying = Some(Instant::now());
                    let live = hierarchy.walk().len() as u64;
                    self.model.dying.on_node = count_dying(hierarchy, live).ok();
                }
                !*ended
            }
            Source::Replay(player) => {
                let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
                player.tick(ns, &mut self.model);
                true
            }
        }
    }

    /// Draws and takes keys until `q`, Ctrl-C, or the end of a live pipeline.
    ///
    /// # Errors
    ///
    /// When the terminal cannot be drawn on or read.
    pub fn run(&mut self, screen: &mut Screen) -> anyhow::Result<()> {
        let mut last = Instant::now();
        let mut last_dying = None;
        // Drawn again when events came, a key was pressed, or the terminal changed; else once
        // a second (rates age): an idle node costs next to nothing.
        let mut drawn: Option<(Instant, u64)> = None;
        let mut input = true;
        loop {
            let now = Instant::now();
            if !self.pump(now - last, &mut last_dying) {
                return Ok(());
            }
            last = now;
            let stale = drawn.is_none_or(|(at, events)| {
                events != self.model.events || at.elapsed() >= IDLE_REDRAW
            });
            if input || stale {
                self.refresh();
                screen.terminal.draw(|frame| view::draw(frame, self))?;
                drawn = Some((Instant::now(), self.model.events));
                input = false;
            }
            if event::poll(FRAME)? {
                match event::read()? {
                    TermEvent::Key(key) if key.kind != KeyEventKind::Release => {
                        if self.key(key) == Action::Quit {
                            return Ok(());
                        }
                        input = true;
                    }
                    TermEvent::Resize(..) => input = true,
                    _ => {}
                }
            }
        }
    }

    /// Tells a live pipeline to stop.
    pub fn stop(&mut self) {
        if let Source::Live { stop, .. } = &mut self.source
            && let Some(stop) = stop.take()
        {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        attribution::MemoryStats,
        event::{HostClock, Memcg, What},
    };

    fn app() -> App {
        let (_tx, rx) = std::sync::mpsc::channel();
        let hierarchy = MemoryHierarchy {
            version: crate::attribution::CgroupVersion::V2,
            root: std::path::PathBuf::from("/nonexistent"),
        };
        let clock = HostClock {
            boot_time_wall_ns: 0,
            page_size: 4096,
        };
        let mut model = Model::new(clock);
        for (i, name) in ["/a", "/b", "/c"].iter().enumerate() {
            model.apply(&Event {
                timestamp_ns: 1,
                memcg: Memcg {
                    id: None,
                    cgroup: Some((*name).to_owned()),
                    container: None,
                },
                what: What::Stats(
                    MemoryStats {
                        usage_bytes: Some(i as u64 + 1),
                        limit_bytes: Some(10),
                        ..MemoryStats::default()
                    }
                    .into(),
                ),
            });
        }
        App::new(
            model,
            Source::Live {
                events: rx,
                stop: None,
                hierarchy,
                host: "h".into(),
                ended: false,
            },
        )
    }

    fn press(app: &mut App, code: KeyCode) -> Action {
        let action = app.key(KeyEvent::new(code, KeyModifiers::NONE));
        app.refresh();
        action
    }

    #[test]
    fn keys_sort_filter_select_and_open() {
        let mut app = app();
        app.refresh();
        assert_eq!(
            app.selected.as_deref(),
            Some("/c"),
            "nearest to its limit first"
        );
        press(&mut app, KeyCode::Char('n'));
        assert_eq!(app.lines[0].cgroup, "/a");
        assert_eq!(
            app.selected.as_deref(),
            Some("/c"),
            "the selection stays on its row"
        );
        press(&mut app, KeyCode::Home);
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.detail.as_deref(), Some("/b"));
        press(&mut app, KeyCode::Esc);
        assert_eq!(app.detail, None);
        for code in [KeyCode::Char('/'), KeyCode::Char('b'), KeyCode::Enter] {
            press(&mut app, code);
        }
        assert_eq!(app.filter, "b");
        assert_eq!(app.lines.len(), 1);
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.detail.as_deref(), Some("/b"));
        // Esc and `/` read as one Alt chord: back to the table, then the filter prompt.
        app.key(KeyEvent::new(KeyCode::Char('/'), KeyModifiers::ALT));
        assert_eq!(
            (app.detail.as_deref(), app.editing.as_deref()),
            (None, Some("b"))
        );
        press(&mut app, KeyCode::Esc);
        assert_eq!(press(&mut app, KeyCode::Char('q')), Action::Quit);
        let ctrl_c = app.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL));
        assert_eq!(ctrl_c, Action::Quit);
    }
}
