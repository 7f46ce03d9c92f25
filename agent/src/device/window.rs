//! The maintenance window: when a device may reboot. A config value (`reboot.window`), parsed
//! with the config and read by the reboot decision, so it lives below both.

/// When the device may reboot: `never`, or a daily local-time range `HH:MM-HH:MM` that may wrap
/// midnight (`22:00-04:00`); `00:00-24:00` is any time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Window {
    #[default]
    Never,
    /// Minutes since local midnight: start inclusive, end exclusive.
    Daily { start: u16, end: u16 },
}

impl Window {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "never" {
            return Ok(Window::Never);
        }
        let bad = || {
            format!("reboot.window '{text}' is not `never` or a local time range `HH:MM-HH:MM`, e.g. `02:00-04:00`")
        };
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        let minute = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
        };
        let (start, end) = (minute(a).ok_or_else(bad)?, minute(b).ok_or_else(bad)?);
        if start == end || start == 24 * 60 {
            return Err(format!(
                "reboot.window '{text}' is empty; write `00:00-24:00` for any time or `never`"
            ));
        }
        Ok(Window::Daily { start, end })
    }

    /// Whether `minute` (since local midnight) is inside the window.
    pub fn contains(&self, minute: u16) -> bool {
        match *self {
            Window::Never => false,
            Window::Daily { start, end } if start < end => (start..end).contains(&minute),
            Window::Daily { start, end } => minute >= start || minute < end,
        }
    }

    pub fn describe(&self) -> String {
        match *self {
            Window::Never => "never".into(),
            Window::Daily { start, end } => format!(
                "{:02}:{:02}-{:02}:{:02}",
                start / 60,
                start % 60,
                end / 60,
                end % 60
            ),
        }
    }
}
