package bridgeif

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

func TestEncodeRequest(t *testing.T) {
	b := sunLinux.encodeRequest(3, "/tmp/sw/.cab-1-1", "cab client x")
	if len(b) != 122+len("cab client x") {
		t.Fatalf("length %d", len(b))
	}
	if binary.NativeEndian.Uint32(b[0:]) != 0xfeedface || binary.NativeEndian.Uint32(b[4:]) != 3 || binary.NativeEndian.Uint32(b[8:]) != 3<<8 {
		t.Fatalf("header % x", b[:12])
	}
	if binary.NativeEndian == binary.ByteOrder(binary.LittleEndian) {
		// The layout research/vde.md shows for port 3 on x86.
		if want := []byte{0xce, 0xfa, 0xed, 0xfe, 3, 0, 0, 0, 0, 3, 0, 0, 1, 0}; !bytes.Equal(b[:14], want) {
			t.Fatalf("header % x, want % x", b[:14], want)
		}
	}
	if !bytes.HasPrefix(b[14:], []byte("/tmp/sw/.cab-1-1\x00")) || b[121] != 0 || string(b[122:]) != "cab client x" {
		t.Fatal("sockaddr or description misplaced")
	}
	if l := len(sunLinux.encodeRequest(0, "/x", strings.Repeat("d", 500))); l != 256 {
		t.Fatalf("long description: request of %d bytes, want 256 (the switch reads 256)", l)
	}
}

func reply(path string) []byte {
	b := make([]byte, vdeSunLen)
	if nativeSun.bsd {
		b[1] = 1
	} else {
		binary.NativeEndian.PutUint16(b, 1)
	}
	copy(b[2:], path)
	return b
}

func TestParseReply(t *testing.T) {
	p, n, err := parseReply(reply("/tmp/sw/003.8"))
	if err != nil || p != "/tmp/sw/003.8" || n != 3 {
		t.Fatalf("%q %d %v", p, n, err)
	}
	for _, bad := range [][]byte{nil, reply("")[:50], reply(""), append([]byte{2, 2}, reply("/x")[2:]...)} {
		if _, _, err := parseReply(bad); err == nil {
			t.Errorf("reply % x accepted", bad[:min(len(bad), 8)])
		}
	}
}

// On FreeBSD and macOS the request and the reply carry the BSD struct
// sockaddr_un: 106 bytes, a length byte and a 1-byte family, the path at
// byte 2 as on Linux.
func TestVDERequestBSDLayout(t *testing.T) {
	for goos, want := range map[string]sunLayout{"freebsd": sunBSD, "darwin": sunBSD, "linux": sunLinux, "windows": sunLinux} {
		if sunFor(goos) != want {
			t.Errorf("%s: layout %+v", goos, sunFor(goos))
		}
	}
	b := sunBSD.encodeRequest(3, "/tmp/sw/.cab-1-1", "cab")
	if len(b) != 12+106+3 || b[12] != 106 || b[13] != 1 {
		t.Fatalf("request of %d bytes, sockaddr header % x", len(b), b[12:14])
	}
	if !bytes.HasPrefix(b[14:], []byte("/tmp/sw/.cab-1-1\x00")) || b[12+106-1] != 0 || string(b[12+106:]) != "cab" {
		t.Fatal("path or description misplaced")
	}
	if l := len(sunBSD.encodeRequest(0, "/x", strings.Repeat("d", 500))); l != 256 {
		t.Fatalf("long description: request of %d bytes, want 256", l)
	}
	// A path of the most bytes sun_path holds keeps its NUL.
	long := "/" + strings.Repeat("p", sunBSD.maxPath()-1)
	if b := sunBSD.encodeRequest(0, long+"overflow", ""); string(b[14:14+len(long)]) != long || b[14+len(long)] != 0 {
		t.Fatal("an over-long path overran sun_path")
	}

	r := make([]byte, 106)
	r[0], r[1] = 106, 1
	copy(r[2:], "/tmp/sw/007.3")
	if p, n, err := sunBSD.parseReply(r); err != nil || p != "/tmp/sw/007.3" || n != 7 {
		t.Fatalf("BSD reply: %q %d %v", p, n, err)
	}
	r[0] = 0 // the switch may leave sun_len zero
	if _, _, err := sunBSD.parseReply(r); err != nil {
		t.Fatalf("BSD reply with sun_len 0: %v", err)
	}
	for _, bad := range [][]byte{r[:105], append(r, 0), {106, 2}} {
		if _, _, err := sunBSD.parseReply(bad); err == nil {
			t.Errorf("BSD reply of %d bytes accepted", len(bad))
		}
	}
	if _, _, err := sunLinux.parseReply(r); err == nil {
		t.Error("a BSD reply parsed as a Linux one")
	}
}

func FuzzVDEReplyBSD(f *testing.F) {
	r := make([]byte, 106)
	r[1] = 1
	copy(r[2:], "/tmp/sw/003.8")
	f.Add(r)
	f.Add([]byte{0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, n, err := sunBSD.parseReply(b)
		if err == nil && (p == "" || len(b) != 106 || strings.IndexByte(p, 0) >= 0 || n < 0) {
			t.Fatalf("accepted %q port %d", p, n)
		}
	})
}

func FuzzParseReply(f *testing.F) {
	f.Add(reply("/tmp/sw/003.8"))
	f.Add(reply("/x/abc"))
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		p, n, err := parseReply(b)
		if err == nil && (p == "" || strings.IndexByte(p, 0) >= 0 || n < 0) {
			t.Fatalf("accepted %q port %d", p, n)
		}
	})
}

func TestParseVDESpec(t *testing.T) {
	for in, want := range map[string]struct {
		dir  string
		port int
	}{
		"/tmp/sw": {"/tmp/sw", 0}, "/tmp/sw[5]": {"/tmp/sw", 5}, "vde:///tmp/sw[7]": {"/tmp/sw", 7}, "/tmp/sw[]": {"/tmp/sw", 0},
	} {
		d, p, err := ParseVDESpec(in)
		if err != nil || d != want.dir || p != want.port {
			t.Errorf("%q: %q %d %v", in, d, p, err)
		}
	}
	for _, bad := range []string{"", "[3]", "/tmp/sw[x]", "/tmp/sw[3"} {
		if _, _, err := ParseVDESpec(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestParseTAPSpec(t *testing.T) {
	ts, err := ParseTAPSpec("cab0,bridge=br0,mtu=9000")
	if err != nil || ts != (TAPSpec{Name: "cab0", Bridge: "br0", MTU: 9000}) {
		t.Fatalf("%+v %v", ts, err)
	}
	for in, want := range map[string]string{
		"":                        "no device name",
		"cab0,bridge":             "use bridge=BR",
		"cab0,color=red":          "unknown option",
		"cab0,bridge=a,ovs=b":     "one bridge",
		"cab0,mtu=9":              "mtu=9",
		"cab0,ovs=br-int,mtu=big": "mtu=big",
	} {
		if _, err := ParseTAPSpec(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", in, err, want)
		}
	}
}

func FuzzParseTAPSpec(f *testing.F) {
	f.Add("cab0,bridge=br0,mtu=1500")
	f.Add("x,ovs=y")
	f.Add(",,=")
	f.Fuzz(func(t *testing.T, s string) {
		ts, err := ParseTAPSpec(s)
		if err == nil && (ts.Name == "" || ts.Bridge != "" && ts.OVS != "") {
			t.Fatalf("accepted %+v", ts)
		}
	})
}
