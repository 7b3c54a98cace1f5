//! What the operator sees and hears: three LEDs and a buzzer behind embedded-hal 1.0 output
//! pins, and the capture button behind an input pin. The screening code only knows these
//! traits; `rppal` builds the real pins on a Pi (feature `rpi`), tests use mocks.

use embedded_hal::delay::DelayNs;
use embedded_hal::digital::{InputPin, OutputPin};

use crate::record::Outcome;

/// Green = no referral, red = refer, amber = ungradable (retake); the buzzer beeps once for a
/// referral and twice for a retake. A borderline result lights amber instead of green, or amber
/// beside red, and beeps twice: refer or retake.
#[derive(Debug)]
pub struct Indicator<G, R, A, B> {
    pub green: G,
    pub red: R,
    pub amber: A,
    pub buzzer: B,
}

/// Beep length and gap, milliseconds.
const BEEP_MS: u32 = 150;

impl<G: OutputPin, R: OutputPin, A: OutputPin, B: OutputPin> Indicator<G, R, A, B> {
    /// All off.
    pub fn clear(&mut self) -> Result<(), &'static str> {
        self.green.set_low().map_err(|_| "green LED")?;
        self.red.set_low().map_err(|_| "red LED")?;
        self.amber.set_low().map_err(|_| "amber LED")?;
        self.buzzer.set_low().map_err(|_| "buzzer")
    }

    /// Shows an outcome (call only after the record is on disk); `borderline` as in
    /// [`crate::record::Record::borderline`].
    pub fn show(
        &mut self,
        outcome: Outcome,
        borderline: bool,
        delay: &mut impl DelayNs,
    ) -> Result<(), &'static str> {
        self.clear()?;
        let beeps = match outcome {
            Outcome::NoReferral | Outcome::Refer if borderline => {
                if outcome == Outcome::Refer {
                    self.red.set_high().map_err(|_| "red LED")?;
                }
                self.amber.set_high().map_err(|_| "amber LED")?;
                2
            }
            Outcome::NoReferral => {
                self.green.set_high().map_err(|_| "green LED")?;
                0
            }
            Outcome::Refer => {
                self.red.set_high().map_err(|_| "red LED")?;
                1
            }
            Outcome::Ungradable | Outcome::Unreadable => {
                self.amber.set_high().map_err(|_| "amber LED")?;
                2
            }
        };
        for _ in 0..beeps {
            self.buzzer.set_high().map_err(|_| "buzzer")?;
            delay.delay_ms(BEEP_MS);
            self.buzzer.set_low().map_err(|_| "buzzer")?;
            delay.delay_ms(BEEP_MS);
        }
        Ok(())
    }
}

/// Waits for a debounced press of an active-low button (pulled up, pressed = low).
pub fn wait_for_press(
    button: &mut impl InputPin,
    delay: &mut impl DelayNs,
) -> Result<(), &'static str> {
    let mut stable = 0;
    while stable < 3 {
        stable = if button.is_low().map_err(|_| "button")? {
            stable + 1
        } else {
            0
        };
        delay.delay_ms(10);
    }
    while button.is_low().map_err(|_| "button")? {
        delay.delay_ms(10);
    }
    Ok(())
}

/// Logs a screening and only then shows it: what was shown is always on disk first.
pub fn report<G: OutputPin, R: OutputPin, A: OutputPin, B: OutputPin>(
    log: &mut crate::record::Log,
    indicator: &mut Indicator<G, R, A, B>,
    record: &crate::record::Record,
    delay: &mut impl DelayNs,
) -> anyhow::Result<()> {
    log.append(record)?;
    indicator
        .show(record.outcome, record.borderline, delay)
        .map_err(|pin| anyhow::anyhow!("{pin} failed"))
}
