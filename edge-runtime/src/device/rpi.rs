//! The real pins on a Raspberry Pi (feature `rpi`): the only module that names `rppal`. Outputs
//! start low; the button input gets the SoC's internal pull-up (pressed = low).

use anyhow::{anyhow, Result};
use rppal::gpio::{Gpio, InputPin, OutputPin};

use super::Pins;
use crate::indicator::Indicator;

/// The indicator on real pins.
pub type PiIndicator = Indicator<OutputPin, OutputPin, OutputPin, OutputPin>;

/// Claims the pins (BCM numbers) and returns the indicator, all off, and the button.
pub fn open(pins: &Pins) -> Result<(PiIndicator, InputPin)> {
    pins.check()?;
    let gpio = Gpio::new().map_err(|e| {
        anyhow!(
            "cannot open the GPIO: {e}. Run on a Raspberry Pi as a user in the `gpio` group \
             (`sudo usermod -aG gpio $USER`, then log in again)"
        )
    })?;
    let claim = |bcm: u8, what: &str| {
        gpio.get(bcm)
            .map_err(|e| anyhow!("cannot claim BCM {bcm} for the {what}: {e}"))
    };
    let indicator = Indicator {
        green: claim(pins.green, "green LED")?.into_output_low(),
        red: claim(pins.red, "red LED")?.into_output_low(),
        amber: claim(pins.amber, "amber LED")?.into_output_low(),
        buzzer: claim(pins.buzzer, "buzzer")?.into_output_low(),
    };
    let button = claim(pins.button, "capture button")?.into_input_pullup();
    Ok((indicator, button))
}
