package main

import (
	"strings"
	"testing"

	"rsc.io/qr"
)

// TestRenderQR reads the modules back from the drawing and compares them
// with the encoder's bitmap, quiet zone included.
func TestRenderQR(t *testing.T) {
	text := "sotto:invite/v1?account=c2e7dbpbpikzkudktd4ksjpeaox2e3t5"
	var out strings.Builder
	if err := renderQR(&out, text); err != nil {
		t.Fatal(err)
	}
	code, err := qr.Encode(text, qr.M)
	if err != nil {
		t.Fatal(err)
	}
	n := code.Size + 2*qrQuietZone
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != (n+1)/2 {
		t.Fatalf("%d lines, want %d", len(lines), (n+1)/2)
	}
	for row, line := range lines {
		cells := []rune(line)
		if len(cells) != n {
			t.Fatalf("line %d has %d cells, want %d", row, len(cells), n)
		}
		for x, r := range cells {
			var top, bottom bool
			switch r {
			case '█':
				top, bottom = true, true
			case '▀':
				top = true
			case '▄':
				bottom = true
			case ' ':
			default:
				t.Fatalf("unexpected rune %q", r)
			}
			for dy, isLight := range []bool{top, bottom} {
				y := 2*row + dy
				if y >= n {
					continue
				}
				mx, my := x-qrQuietZone, y-qrQuietZone
				want := mx < 0 || my < 0 || mx >= code.Size || my >= code.Size || !code.Black(mx, my)
				if isLight != want {
					t.Fatalf("module (%d,%d) light=%v, want %v", mx, my, isLight, want)
				}
			}
		}
	}
}
