//! The device loop: the operator presses the capture button, the board takes the photo, screens
//! it, appends the record to the log (fsync'd) and only then lights the LED for the answer.
//!
//! Generic over embedded-hal 1.0 pins and a [`Camera`], so tests drive it with mocks; the real
//! pins come from [`rpi`] (feature `rpi`, the one module that names `rppal`).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{InputPin, OutputPin};

use crate::indicator::{report, wait_for_press, Indicator};
use crate::record::{Log, Record};
use crate::screen::Screener;
use crate::source::Camera;

#[cfg(feature = "rpi")]
pub mod rpi;

/// BCM GPIO numbers of the indicator and the button (not header positions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pins {
    pub green: u8,
    pub red: u8,
    pub amber: u8,
    pub buzzer: u8,
    /// Active low: wired to GND, the internal pull-up holds it high when not pressed.
    pub button: u8,
}

impl Default for Pins {
    /// Green 17, red 27, amber 22 (header pins 11, 13, 15), buzzer 18 (pin 12), button 23 (pin 16).
    fn default() -> Self {
        Pins {
            green: 17,
            red: 27,
            amber: 22,
            buzzer: 18,
            button: 23,
        }
    }
}

impl Pins {
    /// Refuses two functions on one pin and numbers the Pi's header does not have (BCM 2..=27).
    pub fn check(&self) -> Result<()> {
        let named = [
            ("--green-pin", self.green),
            ("--red-pin", self.red),
            ("--amber-pin", self.amber),
            ("--buzzer-pin", self.buzzer),
            ("--button-pin", self.button),
        ];
        for (i, (flag, bcm)) in named.iter().enumerate() {
            if !(2..=27).contains(bcm) {
                bail!("{flag} {bcm}: the Pi's header has BCM GPIO 2 to 27; pick one of those");
            }
            if let Some((other, _)) = named[..i].iter().find(|(_, b)| b == bcm) {
                bail!("{other} and {flag} are both BCM {bcm}: give each its own pin");
            }
        }
        Ok(())
    }
}

/// A [`DelayNs`] that sleeps the thread (the loop's beeps and button polling).
#[derive(Debug, Default, Clone, Copy)]
pub struct SleepDelay;

impl DelayNs for SleepDelay {
    fn delay_ns(&mut self, ns: u32) {
        std::thread::sleep(Duration::from_nanos(ns.into()));
    }
}

/// The operator's side of the board: LEDs and buzzer, the capture button, and a delay.
#[derive(Debug)]
pub struct Device<G, R, A, B, P, D> {
    pub indicator: Indicator<G, R, A, B>,
    pub button: P,
    pub delay: D,
}

impl<G, R, A, B, P, D> Device<G, R, A, B, P, D>
where
    G: OutputPin,
    R: OutputPin,
    A: OutputPin,
    B: OutputPin,
    P: InputPin,
    D: DelayNs,
{
    /// Lights off, ready for the first press.
    pub fn start(&mut self) -> Result<()> {
        self.indicator
            .clear()
            .map_err(|pin| anyhow!("setting the {pin} failed"))
    }

    /// One press: waits for the button, turns the last answer off, takes the photo, screens it,
    /// logs the record and only then shows it. A photo that could not be taken is logged and
    /// shown as ungradable (amber) with the reason. Errors only when the log cannot be written
    /// (nothing is shown then) or a pin fails.
    pub fn press(
        &mut self,
        camera: &mut (impl Camera + ?Sized),
        screener: &mut Screener,
        log: &mut Log,
    ) -> Result<Record> {
        wait_for_press(&mut self.button, &mut self.delay)
            .map_err(|pin| anyhow!("reading the {pin} failed"))?;
        self.start()?;
        let t0 = Instant::now();
        let record = match camera.take() {
            Ok(shot) => screener.screen_bytes(&shot.name, &shot.bytes, t0),
            Err(missed) => {
                let mut r = screener.ungradable(&missed.image, missed.sha256, missed.reason);
                r.latency.total_ms = t0.elapsed().as_secs_f64() * 1e3;
                r
            }
        };
        report(log, &mut self.indicator, &record, &mut self.delay)?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::convert::Infallible;
    use std::path::{Path, PathBuf};
    use std::rc::Rc;

    use embedded_hal_mock::eh1::delay::NoopDelay;
    use embedded_hal_mock::eh1::digital::{Mock as ButtonMock, State, Transaction};
    use embedded_hal_mock::eh1::MockError;

    use super::*;
    use crate::engine::{default_model, Engine};
    use crate::record::{read_log, Outcome};
    use crate::source::{Missed, Shot};

    /// (pin, level, records in the log when it was set).
    type Events = Rc<RefCell<Vec<(&'static str, bool, usize)>>>;

    struct Led {
        name: &'static str,
        events: Events,
        log: PathBuf,
    }

    impl embedded_hal::digital::ErrorType for Led {
        type Error = Infallible;
    }

    impl OutputPin for Led {
        fn set_low(&mut self) -> Result<(), Infallible> {
            self.events.borrow_mut().push((self.name, false, 0));
            Ok(())
        }
        fn set_high(&mut self) -> Result<(), Infallible> {
            let on_disk = read_log(&self.log).map_or(0, |r| r.records.len());
            self.events.borrow_mut().push((self.name, true, on_disk));
            Ok(())
        }
    }

    /// Hands out what it was given, once per press.
    struct FakeCamera(Vec<Result<Shot, Missed>>);

    impl Camera for FakeCamera {
        fn take(&mut self) -> Result<Shot, Missed> {
            self.0.remove(0)
        }
    }

    /// A press as the debouncer reads it: low three times (30 ms), then released.
    fn one_press() -> Vec<Transaction> {
        let mut t = vec![Transaction::get(State::Low); 3];
        t.push(Transaction::get(State::High));
        t
    }

    struct Rig {
        _dir: tempfile::TempDir,
        log_path: PathBuf,
        log: Log,
        events: Events,
        device: Device<Led, Led, Led, Led, ButtonMock, NoopDelay>,
        screener: Screener,
    }

    fn rig(button: &[Transaction]) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("results.jsonl");
        let (log, _) = Log::open(&log_path).unwrap();
        let events: Events = Rc::default();
        let led = |name| Led {
            name,
            events: events.clone(),
            log: log_path.clone(),
        };
        let device = Device {
            indicator: Indicator {
                green: led("green"),
                red: led("red"),
                amber: led("amber"),
                buzzer: led("buzzer"),
            },
            button: ButtonMock::new(button),
            delay: NoopDelay::new(),
        };
        let screener = Screener::new(Engine::load(&default_model()).expect("shipped model loads"));
        Rig {
            _dir: dir,
            log_path,
            log,
            events,
            device,
            screener,
        }
    }

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(name),
        )
        .unwrap()
    }

    /// What a record says, without the f64 timings (not bit-exact through JSON).
    fn said(
        r: &Record,
    ) -> (
        String,
        Option<String>,
        Outcome,
        Option<f32>,
        Vec<f32>,
        Option<String>,
    ) {
        (
            r.image.clone(),
            r.image_sha256.clone(),
            r.outcome,
            r.probability,
            r.per_view.clone(),
            r.error.clone(),
        )
    }

    fn lit(events: &Events) -> Vec<(&'static str, usize)> {
        events
            .borrow()
            .iter()
            .filter(|e| e.1)
            .map(|e| (e.0, e.2))
            .collect()
    }

    #[test]
    fn a_press_writes_the_record_to_disk_before_any_led_goes_high() {
        let mut r = rig(&one_press());
        let mut camera = FakeCamera(vec![Ok(Shot {
            name: "fundus_rgb.jpg".into(),
            bytes: fixture("fundus_rgb.jpg"),
        })]);
        let record = r
            .device
            .press(&mut camera, &mut r.screener, &mut r.log)
            .unwrap();
        r.device.button.done();
        assert!(record.probability.is_some(), "{:?}", record.error);
        let on_disk = read_log(&r.log_path).unwrap().records;
        assert_eq!(
            on_disk.iter().map(said).collect::<Vec<_>>(),
            [said(&record)]
        );
        let led = match record.outcome {
            Outcome::NoReferral => "green",
            Outcome::Refer => "red",
            Outcome::Ungradable | Outcome::Unreadable => {
                panic!("a real photo was not screened: {:?}", record.error)
            }
        };
        let lit = lit(&r.events);
        assert_eq!(
            lit[0],
            (led, 1),
            "the answer's LED, with the record already on disk"
        );
        assert!(lit.iter().all(|&(_, n)| n == 1));
        let ev = r.events.borrow();
        assert!(
            ev[..4].iter().all(|e| !e.1),
            "last answer cleared first: {ev:?}"
        );
    }

    #[test]
    fn a_failed_screening_or_a_missed_photo_shows_amber_and_is_still_logged() {
        let press_twice: Vec<_> = one_press().into_iter().chain(one_press()).collect();
        let mut r = rig(&press_twice);
        let jpeg = fixture("fundus_rgb.jpg");
        let mut camera = FakeCamera(vec![
            Ok(Shot {
                name: "cut.jpg".into(),
                bytes: jpeg[..jpeg.len() / 2].to_vec(),
            }),
            Err(Missed {
                image: "/dev/video0".into(),
                sha256: None,
                reason: "the camera gave no frame: check its cable".into(),
            }),
        ]);
        let first = r
            .device
            .press(&mut camera, &mut r.screener, &mut r.log)
            .unwrap();
        assert_eq!(first.outcome, Outcome::Ungradable);
        assert!(first.error.as_deref().unwrap().contains("truncated"));
        assert_eq!(lit(&r.events)[0], ("amber", 1));

        r.events.borrow_mut().clear();
        let second = r
            .device
            .press(&mut camera, &mut r.screener, &mut r.log)
            .unwrap();
        r.device.button.done();
        assert_eq!(second.outcome, Outcome::Ungradable);
        assert_eq!(
            second.error.as_deref(),
            Some("the camera gave no frame: check its cable")
        );
        assert_eq!(second.image, "/dev/video0");
        assert_eq!(
            lit(&r.events),
            [("amber", 2), ("buzzer", 2), ("buzzer", 2)],
            "amber and two beeps, each after the second record is on disk"
        );
        let on_disk = read_log(&r.log_path).unwrap().records;
        assert_eq!(
            on_disk.iter().map(said).collect::<Vec<_>>(),
            [said(&first), said(&second)]
        );
    }

    #[test]
    fn a_button_that_cannot_be_read_is_an_error_and_nothing_is_logged_or_shown() {
        let mut r =
            rig(&[Transaction::get(State::Low)
                .with_error(MockError::Io(std::io::ErrorKind::BrokenPipe))]);
        let mut camera = FakeCamera(vec![]);
        let e = r
            .device
            .press(&mut camera, &mut r.screener, &mut r.log)
            .unwrap_err();
        r.device.button.done();
        assert_eq!(e.to_string(), "reading the button failed");
        assert!(read_log(&r.log_path).unwrap().records.is_empty());
        assert!(r.events.borrow().is_empty());
    }

    #[test]
    fn pins_must_be_distinct_header_gpios() {
        assert!(Pins::default().check().is_ok());
        let same = Pins {
            buzzer: 17,
            ..Pins::default()
        };
        assert_eq!(
            same.check().unwrap_err().to_string(),
            "--green-pin and --buzzer-pin are both BCM 17: give each its own pin"
        );
        let off_header = Pins {
            button: 40,
            ..Pins::default()
        };
        assert!(off_header
            .check()
            .unwrap_err()
            .to_string()
            .starts_with("--button-pin 40: the Pi's header has BCM GPIO 2 to 27"));
    }
}
