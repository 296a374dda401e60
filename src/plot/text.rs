//! Text layout and rasterization with the embedded DejaVu Sans.
//!
//! plotters 0.3.7's ab_glyph renderer places each glyph at its advance without its left side
//! bearing, so letters crowd and gaps open in PNG labels. [`TextBackend`] wraps a plotters
//! backend and lays text out itself: glyphs on a common baseline at their advances, with
//! kerning. Every other drawing call goes to the wrapped backend unchanged.

use std::sync::OnceLock;

use ab_glyph::{point, Font, FontRef, PxScaleFont, ScaleFont};
use plotters_backend::text_anchor::{HPos, VPos};
use plotters_backend::{
    BackendColor, BackendCoord, BackendStyle, BackendTextStyle, DrawingBackend, DrawingErrorKind,
    FontStyle,
};

/// DejaVu Sans regular and bold, parsed once.
fn fonts() -> &'static Result<[FontRef<'static>; 2], ab_glyph::InvalidFont> {
    static FONTS: OnceLock<Result<[FontRef<'static>; 2], ab_glyph::InvalidFont>> = OnceLock::new();
    FONTS.get_or_init(|| {
        Ok([
            FontRef::try_from_slice(dejavu::sans::regular())?,
            FontRef::try_from_slice(dejavu::sans::bold())?,
        ])
    })
}

/// Returns the face for `style` at `size` pixels (ab_glyph's scale: ascent minus descent).
fn scaled_font<E: std::error::Error + Send + Sync>(
    style: FontStyle,
    size: f64,
) -> Result<PxScaleFont<&'static FontRef<'static>>, DrawingErrorKind<E>> {
    let fonts = fonts()
        .as_ref()
        .map_err(|error| DrawingErrorKind::FontError(Box::new(*error)))?;
    let face = match style {
        FontStyle::Bold => &fonts[1],
        _ => &fonts[0],
    };
    Ok(face.as_scaled(size as f32))
}

/// Width (the sum of advances and kerning) and height (ascent minus descent) of `text`.
fn measure(font: &PxScaleFont<&FontRef<'_>>, text: &str) -> (f32, f32) {
    let mut caret = 0.0;
    let mut previous = None;
    for c in text.chars() {
        let id = font.glyph_id(c);
        if let Some(previous) = previous {
            caret += font.kern(previous, id);
        }
        caret += font.h_advance(id);
        previous = Some(id);
    }
    (caret, font.height())
}

/// A plotters backend whose text is laid out with ab_glyph: rasterized when `raster` is
/// true (PNG), otherwise passed on as text (SVG) and only measured here.
pub(crate) struct TextBackend<B> {
    inner: B,
    raster: bool,
}

impl<B: DrawingBackend> TextBackend<B> {
    /// Wraps `inner`; `raster` draws text as pixels instead of passing it on.
    pub(crate) fn new(inner: B, raster: bool) -> Self {
        Self { inner, raster }
    }

    /// Draws `text` as anti-aliased pixels, anchored at `pos` like plotters' own text.
    fn rasterize<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<B::ErrorType>> {
        let color = style.color();
        let font = scaled_font(style.style(), style.size())?;
        let (width, height) = measure(&font, text);
        let anchor = style.anchor();
        let dx = match anchor.h_pos {
            HPos::Left => 0.0,
            HPos::Center => -width / 2.0,
            HPos::Right => -width,
        };
        let dy = match anchor.v_pos {
            VPos::Top => 0.0,
            VPos::Center => -height / 2.0,
            VPos::Bottom => -height,
        };
        let transform = style.transform();

        let mut caret = dx;
        let mut previous = None;
        for c in text.chars() {
            let id = font.glyph_id(c);
            if let Some(previous) = previous {
                caret += font.kern(previous, id);
            }
            // The baseline sits one ascent below the top of the text box.
            let glyph = id.with_scale_and_position(font.scale(), point(caret, dy + font.ascent()));
            caret += font.h_advance(id);
            previous = Some(id);
            let Some(outline) = font.outline_glyph(glyph) else {
                continue;
            };
            let bounds = outline.px_bounds();
            let mut coverage_pixels = Vec::new();
            outline.draw(|x, y, coverage| coverage_pixels.push((x, y, coverage)));
            for (x, y, coverage) in coverage_pixels {
                if coverage <= 0.0 {
                    continue;
                }
                let local_x = bounds.min.x as i32 + x as i32;
                let local_y = bounds.min.y as i32 + y as i32;
                let (x, y) = transform.transform(local_x, local_y);
                let pixel = BackendColor {
                    alpha: color.alpha * f64::from(coverage.min(1.0)),
                    rgb: color.rgb,
                };
                self.inner.draw_pixel((pos.0 + x, pos.1 + y), pixel)?;
            }
        }
        Ok(())
    }
}

impl<B: DrawingBackend> DrawingBackend for TextBackend<B> {
    type ErrorType = B::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.inner.get_size()
    }

    fn ensure_prepared(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.ensure_prepared()
    }

    fn present(&mut self) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.present()
    }

    fn draw_pixel(
        &mut self,
        point: BackendCoord,
        color: BackendColor,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_pixel(point, color)
    }

    fn draw_line<S: BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_line(from, to, style)
    }

    fn draw_rect<S: BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_rect(upper_left, bottom_right, style, fill)
    }

    fn draw_path<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_path(path, style)
    }

    fn draw_circle<S: BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.draw_circle(center, radius, style, fill)
    }

    fn fill_polygon<S: BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vertices: I,
        style: &S,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.fill_polygon(vertices, style)
    }

    fn draw_text<S: BackendTextStyle>(
        &mut self,
        text: &str,
        style: &S,
        pos: BackendCoord,
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        if style.color().alpha == 0.0 {
            return Ok(());
        }
        if self.raster {
            self.rasterize(text, style, pos)
        } else {
            self.inner.draw_text(text, style, pos)
        }
    }

    fn estimate_text_size<S: BackendTextStyle>(
        &self,
        text: &str,
        style: &S,
    ) -> Result<(u32, u32), DrawingErrorKind<Self::ErrorType>> {
        let font = scaled_font(style.style(), style.size())?;
        let (width, height) = measure(&font, text);
        Ok((width.ceil() as u32, height.ceil() as u32))
    }

    fn blit_bitmap(
        &mut self,
        pos: BackendCoord,
        size: (u32, u32),
        src: &[u8],
    ) -> Result<(), DrawingErrorKind<Self::ErrorType>> {
        self.inner.blit_bitmap(pos, size, src)
    }
}
