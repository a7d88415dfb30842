#!/usr/bin/env python3
"""Says whether a PNG screenshot shows a rendered page rather than a blank one (tests/package/run.sh).

    png_check.py FILE [MIN_INK_PERCENT] [MIN_COLOURS]

Decodes the PNG with the standard library only (zlib; 8-bit greyscale/RGB/RGBA, not interlaced, which is
what Chromium writes), then measures: the share of pixels that differ from the most common colour (the
page background: "ink"), the number of distinct colours, and the variance of the luminance. A blank page
(white, or one flat colour) has no ink, one colour and no variance. Exit 0 when ink >= MIN_INK_PERCENT
(default 2) and colours >= MIN_COLOURS (default 16); 1 otherwise; 2 on a file that is not such a PNG.
Prints the numbers either way.
"""
import struct
import sys
import zlib
from collections import Counter

CHANNELS = {0: 1, 2: 3, 6: 4}  # colour type -> samples per pixel (8-bit depth only)


def paeth(a, b, c):
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def decode(data):
    """Returns (width, height, channels, rows) with rows a list of bytearrays."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    pos, idat, head = 8, [], None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            head = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    if head is None:
        raise ValueError("no IHDR")
    width, height, depth, ctype, _, _, interlace = head
    if depth != 8 or ctype not in CHANNELS or interlace:
        raise ValueError("unsupported PNG (depth %d, colour type %d, interlace %d)" % (depth, ctype, interlace))
    ch = CHANNELS[ctype]
    raw = zlib.decompress(b"".join(idat))
    stride = width * ch
    rows, prev = [], bytearray(stride)
    for y in range(height):
        off = y * (stride + 1)
        ftype, line = raw[off], bytearray(raw[off + 1:off + 1 + stride])
        for i in range(stride):
            left = line[i - ch] if i >= ch else 0
            up = prev[i]
            if ftype == 1:
                line[i] = (line[i] + left) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + up) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
            elif ftype == 4:
                upleft = prev[i - ch] if i >= ch else 0
                line[i] = (line[i] + paeth(left, up, upleft)) & 0xFF
        rows.append(line)
        prev = line
    return width, height, ch, rows


def measure(width, height, ch, rows):
    colours = Counter()
    lum_sum = lum_sq = 0
    for line in rows:
        for x in range(0, width * ch, ch):
            px = bytes(line[x:x + min(ch, 3)])
            colours[px] += 1
            lum = sum(px) / len(px)
            lum_sum += lum
            lum_sq += lum * lum
    n = width * height
    background = colours.most_common(1)[0][1]
    mean = lum_sum / n
    return {
        "width": width,
        "height": height,
        "ink_percent": 100.0 * (n - background) / n,
        "colours": len(colours),
        "luminance_variance": lum_sq / n - mean * mean,
    }


def main(argv):
    if len(argv) < 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    min_ink = float(argv[2]) if len(argv) > 2 else 2.0
    min_colours = int(argv[3]) if len(argv) > 3 else 16
    try:
        with open(argv[1], "rb") as f:
            m = measure(*decode(f.read()))
    except (OSError, ValueError, zlib.error, struct.error) as e:
        print("png_check: %s: %s" % (argv[1], e), file=sys.stderr)
        return 2
    ok = m["ink_percent"] >= min_ink and m["colours"] >= min_colours
    print("png_check: %s %dx%d ink %.1f%% colours %d luminance variance %.1f: %s" % (
        argv[1], m["width"], m["height"], m["ink_percent"], m["colours"], m["luminance_variance"],
        "rendered" if ok else "BLANK"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
