"""Checks that a picture is really drawn: headless Debian chromium renders a
local SVG/HTML file to PNG (fresh profile, no network, no sandbox: tests run
as root), and a small PNG reader lets tests count the pixels of a colour in a
region (the plot area), without image libraries.
"""
import os
import struct
import subprocess
import tempfile
import zlib


def read_png(path):
    """(width, height, rows of (r, g, b) tuples) of an 8-bit RGB/RGBA PNG."""
    with open(path, "rb") as f:
        data = f.read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and interlace == 0, (depth, color, interlace)
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows, prev = [], bytearray(stride)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b = prev[i]
            c = prev[i - channels] if i >= channels else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append([tuple(line[x * channels:x * channels + 3]) for x in range(width)])
        prev = line
    return width, height, rows


def chromium_png(source, png, width, height):
    """Renders a local file with headless Debian chromium into `png`."""
    profile = tempfile.mkdtemp(prefix="ft_chromium_")
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--no-first-run", "--hide-scrollbars", "--user-data-dir=" + profile,
           "--window-size=%d,%d" % (width, height), "--screenshot=" + png, "file://" + source]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert os.path.exists(png), "chromium wrote no PNG: %s %s" % (r.returncode, r.stderr[-2000:])


def count_color(rows, rgb, box, tolerance=40):
    x0, y0, x1, y1 = box
    n = 0
    for row in rows[y0:y1]:
        for px in row[x0:x1]:
            if all(abs(px[i] - rgb[i]) <= tolerance for i in range(3)):
                n += 1
    return n
