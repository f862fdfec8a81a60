//! The tray's six icons, drawn in code (no image files to keep in step with the states): a
//! coloured disc with a white glyph, so the states differ in shape as well as colour —
//! healthy ✓ green, degraded ! amber, local-only a down arrow into a tray (answers come from
//! this machine) blue, down ✕ red, paused ‖ grey, not checked yet … slate.

use understudy::desktop::tray::Icon;

/// Pixels per side.
pub const SIZE: u32 = 64;

type Seg = ((f32, f32), (f32, f32));

fn glyph(icon: Icon) -> (&'static [u8; 3], Vec<Seg>, f32) {
    match icon {
        Icon::Healthy => (
            &[0x1a, 0x7f, 0x37],
            vec![((18.0, 33.0), (28.0, 43.0)), ((28.0, 43.0), (46.0, 22.0))],
            6.0,
        ),
        Icon::Degraded => (
            &[0xd9, 0x77, 0x06],
            vec![((32.0, 15.0), (32.0, 36.0)), ((32.0, 47.0), (32.0, 47.5))],
            7.0,
        ),
        Icon::LocalOnly => (
            &[0x1d, 0x4e, 0xd8],
            vec![
                ((32.0, 14.0), (32.0, 36.0)),
                ((23.0, 28.0), (32.0, 37.0)),
                ((41.0, 28.0), (32.0, 37.0)),
                ((18.0, 42.0), (18.0, 47.0)),
                ((18.0, 47.0), (46.0, 47.0)),
                ((46.0, 47.0), (46.0, 42.0)),
            ],
            5.0,
        ),
        Icon::Down => (
            &[0xb4, 0x23, 0x18],
            vec![((21.0, 21.0), (43.0, 43.0)), ((43.0, 21.0), (21.0, 43.0))],
            6.5,
        ),
        // Not checked yet: a slate disc with three dots ("…"), nothing claimed.
        Icon::Unknown => (
            &[0x47, 0x55, 0x69],
            vec![
                ((19.0, 32.0), (19.0, 32.5)),
                ((32.0, 32.0), (32.0, 32.5)),
                ((45.0, 32.0), (45.0, 32.5)),
            ],
            9.0,
        ),
        Icon::Paused => (
            &[0x66, 0x70, 0x85],
            vec![((25.0, 19.0), (25.0, 45.0)), ((39.0, 19.0), (39.0, 45.0))],
            7.0,
        ),
    }
}

fn dist_to_segment(p: (f32, f32), (a, b): Seg) -> f32 {
    let (dx, dy) = (b.0 - a.0, b.1 - a.1);
    let len2 = dx * dx + dy * dy;
    let t = if len2 == 0.0 {
        0.0
    } else {
        (((p.0 - a.0) * dx + (p.1 - a.1) * dy) / len2).clamp(0.0, 1.0)
    };
    let (x, y) = (a.0 + t * dx - p.0, a.1 + t * dy - p.1);
    (x * x + y * y).sqrt()
}

/// The icon's RGBA pixels, `SIZE` × `SIZE`, antialiased.
pub fn rgba(icon: Icon) -> Vec<u8> {
    let (color, segments, width) = glyph(icon);
    let mut out = Vec::with_capacity((SIZE * SIZE * 4) as usize);
    let c = SIZE as f32 / 2.0;
    let radius = c - 2.0;
    for y in 0..SIZE {
        for x in 0..SIZE {
            let p = (x as f32 + 0.5, y as f32 + 0.5);
            let r = ((p.0 - c).powi(2) + (p.1 - c).powi(2)).sqrt();
            let disc = (radius - r + 0.5).clamp(0.0, 1.0);
            let d = segments
                .iter()
                .map(|s| dist_to_segment(p, *s))
                .fold(f32::MAX, f32::min);
            let ink = (width / 2.0 - d + 0.5).clamp(0.0, 1.0);
            for ch in color {
                out.push((f32::from(*ch) * (1.0 - ink) + 255.0 * ink).round() as u8);
            }
            out.push((disc * 255.0).round() as u8);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Icon; 6] = [
        Icon::Healthy,
        Icon::Unknown,
        Icon::Degraded,
        Icon::LocalOnly,
        Icon::Down,
        Icon::Paused,
    ];

    #[test]
    fn every_state_has_its_own_icon() {
        let icons: Vec<Vec<u8>> = ALL.iter().map(|i| rgba(*i)).collect();
        for (i, a) in icons.iter().enumerate() {
            assert_eq!(a.len(), (SIZE * SIZE * 4) as usize);
            for b in &icons[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn the_glyphs_differ_in_shape_not_only_in_colour() {
        // The white ink masks (what a colour-blind user sees) differ pairwise.
        let mask = |i: Icon| -> Vec<bool> {
            rgba(i)
                .chunks(4)
                .map(|p| p[3] > 128 && p[0] > 200 && p[1] > 200 && p[2] > 200)
                .collect()
        };
        let masks: Vec<Vec<bool>> = ALL.iter().map(|i| mask(*i)).collect();
        for (i, a) in masks.iter().enumerate() {
            assert!(
                a.iter().filter(|b| **b).count() > 100,
                "{:?} has a glyph",
                ALL[i]
            );
            for b in &masks[i + 1..] {
                let differ = a.iter().zip(b).filter(|(x, y)| x != y).count();
                assert!(differ > 100, "{:?} differs in shape", ALL[i]);
            }
        }
    }
}
