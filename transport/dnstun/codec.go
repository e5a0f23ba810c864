// Package dnstun carries sealed cab packets through the DNS: upstream in the
// names of TXT queries that a recursive resolver forwards to cab's
// authoritative server for a zone, downstream in the TXT answers.
//
// Names carry base32 (lower case, no padding, decoded case-insensitively,
// so resolvers that randomise letter case do not corrupt them) in labels of
// at most 63 characters, the whole name within 253. Answers carry raw bytes
// in TXT character-strings, never more than the requester's advertised
// EDNS0 size (512 without EDNS0), with name compression.
//
// A cab packet travels as fragments with selective retransmission and a
// deadline; packets are independent, so one lost query stalls nothing but
// its own packet. The client keeps an adaptive window of queries in
// flight, and polls when idle so that the server can always send.
//
// Upstream payload (base32 in the query name):
//
//	flags (1: 0x40 | open 0x08 | acks 0..7) | session (4) | query seq (2) |
//	nonce (2) | acks × {packet id (2) | fragment mask (2)} |
//	[packet id (2) | index (1) | count (1) | bytes]
//
// A query that opens a session has the open flag, no acks and no
// fragment, and 4 fixed bytes after the header.
//
// Downstream payload (TXT rdata, strings joined):
//
//	flags (1: 0x40 | more 0x01) | fragments × {packet id (2) | index (1) |
//	count (1) | length (2) | bytes}
//
// The packets are sealed by cab, so a resolver or anyone who queries the
// zone can neither read nor forge them; what the tunnel's own headers
// expose is a session id, sequence numbers and sizes.
package dnstun

import (
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

const (
	maxName  = 253 // characters of a name in text form, without the final dot
	maxLabel = 63

	upHeaderLen   = 9
	ackLen        = 4
	maxAcks       = 7
	upFragHdrLen  = 4
	downHeaderLen = 1
	downFragHdr   = 6

	flagVersion = 0x40
	flagOpen    = 0x08
	flagMore    = 0x01

	// openMagic follows the header of a query that opens a session (and
	// nothing else does), so that random names open none.
	openMagic = "\xca\xb7\x0d\x5e"
)

var (
	b32 = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

	errNotInZone = errors.New("dnstun: name not under the zone")
	errDecode    = errors.New("dnstun: name does not decode")
	errFormat    = errors.New("dnstun: malformed payload")
)

// CanonicalZone returns zone in lower case with a final dot, or an error
// that says what is wrong with it.
func CanonicalZone(zone string) (string, error) {
	z := strings.ToLower(strings.TrimSuffix(zone, "."))
	if z == "" {
		return "", errors.New("dnstun: empty zone")
	}
	if len(z) > 200 {
		return "", fmt.Errorf("dnstun: zone %q too long to carry data (at most 200 characters)", zone)
	}
	for _, l := range strings.Split(z, ".") {
		if l == "" || len(l) > maxLabel {
			return "", fmt.Errorf("dnstun: zone %q: bad label %q", zone, l)
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("dnstun: zone %q: use letters, digits and hyphens", zone)
			}
		}
	}
	return z + ".", nil
}

// nameChars is how many characters n base32 characters take as labels,
// with the dot after each label.
func nameChars(n int) int { return n + (n+maxLabel-1)/maxLabel }

// NameCapacity returns the most bytes one query name under zone (canonical)
// carries.
func NameCapacity(zone string) int {
	z := len(zone) - 1 // without the final dot
	n := 0
	for nameChars(n+1)+z <= maxName {
		n++
	}
	return n * 5 / 8
}

// EncodeName returns the query name that carries p under zone (canonical).
func EncodeName(p []byte, zone string) (string, error) {
	s := b32.EncodeToString(p)
	if nameChars(len(s))+len(zone)-1 > maxName {
		return "", fmt.Errorf("dnstun: %d bytes do not fit a name under %s", len(p), zone)
	}
	var b strings.Builder
	b.Grow(nameChars(len(s)) + len(zone))
	for len(s) > 0 {
		n := min(len(s), maxLabel)
		b.WriteString(s[:n])
		b.WriteByte('.')
		s = s[n:]
	}
	b.WriteString(zone)
	return b.String(), nil
}

// DecodeName returns the bytes that name carries under zone (canonical),
// whatever the case of its letters. It returns errNotInZone for a name
// outside the zone or the apex itself, errDecode for one that does not
// decode.
func DecodeName(name, zone string) ([]byte, error) {
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	if len(name) <= len(zone) || !strings.EqualFold(name[len(name)-len(zone):], zone) || name[len(name)-len(zone)-1] != '.' {
		return nil, errNotInZone
	}
	if len(name) > maxName+1 {
		return nil, errDecode
	}
	data := name[:len(name)-len(zone)-1]
	var buf [maxName]byte
	s := buf[:0]
	for _, l := range strings.Split(data, ".") {
		if l == "" || len(l) > maxLabel {
			return nil, errDecode
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if c >= 'A' && c <= 'Z' {
				c += 'a' - 'A'
			}
			s = append(s, c)
		}
	}
	out := make([]byte, b32.DecodedLen(len(s)))
	n, err := b32.Decode(out, s)
	if err != nil || n == 0 {
		return nil, errDecode
	}
	return out[:n], nil
}

// ack says which fragments of a downstream packet the client has.
type ack struct {
	id   uint16
	mask uint16
}

// upFrag is one fragment of an upstream packet.
type upFrag struct {
	id         uint16
	idx, count uint8
	b          []byte
}

// up is the payload of one query.
type up struct {
	open  bool
	sid   uint32
	seq   uint16
	nonce uint16
	acks  []ack
	frag  *upFrag // nil: a poll
}

// appendUp appends the encoding of u to b.
func appendUp(b []byte, u *up) []byte {
	f := byte(flagVersion) | byte(len(u.acks))
	if u.open {
		f |= flagOpen
	}
	b = append(b, f)
	b = binary.BigEndian.AppendUint32(b, u.sid)
	b = binary.BigEndian.AppendUint16(b, u.seq)
	b = binary.BigEndian.AppendUint16(b, u.nonce)
	if u.open {
		return append(b, openMagic...)
	}
	for _, a := range u.acks {
		b = binary.BigEndian.AppendUint16(b, a.id)
		b = binary.BigEndian.AppendUint16(b, a.mask)
	}
	if f := u.frag; f != nil {
		b = binary.BigEndian.AppendUint16(b, f.id)
		b = append(b, f.idx, f.count)
		b = append(b, f.b...)
	}
	return b
}

// parseUp decodes a query payload. u.acks reuses u's slice; u.frag.b
// aliases p.
func parseUp(p []byte, u *up, fr *upFrag) error {
	if len(p) < upHeaderLen || p[0]&0xf0 != flagVersion || p[0]&0x30 != 0 {
		return errFormat
	}
	n := int(p[0] & 0x07)
	u.open = p[0]&flagOpen != 0
	u.sid = binary.BigEndian.Uint32(p[1:5])
	u.seq = binary.BigEndian.Uint16(p[5:7])
	u.nonce = binary.BigEndian.Uint16(p[7:9])
	p = p[upHeaderLen:]
	u.acks = u.acks[:0]
	u.frag = nil
	if u.open {
		if n != 0 || string(p) != openMagic {
			return errFormat
		}
		return nil
	}
	if len(p) < n*ackLen {
		return errFormat
	}
	for i := 0; i < n; i++ {
		u.acks = append(u.acks, ack{binary.BigEndian.Uint16(p[0:2]), binary.BigEndian.Uint16(p[2:4])})
		p = p[ackLen:]
	}
	switch {
	case len(p) == 0:
	case len(p) <= upFragHdrLen:
		return errFormat
	default:
		fr.id = binary.BigEndian.Uint16(p[0:2])
		fr.idx, fr.count = p[2], p[3]
		fr.b = p[upFragHdrLen:]
		if fr.count == 0 || fr.idx >= fr.count {
			return errFormat
		}
		u.frag = fr
	}
	return nil
}

// downFrag is one fragment of a downstream packet in an answer.
type downFrag struct {
	id         uint16
	idx, count uint8
	b          []byte
}

// appendDownFrag appends one fragment record to an answer payload.
func appendDownFrag(b []byte, f *downFrag) []byte {
	b = binary.BigEndian.AppendUint16(b, f.id)
	b = append(b, f.idx, f.count)
	b = binary.BigEndian.AppendUint16(b, uint16(len(f.b)))
	return append(b, f.b...)
}

// parseDown decodes an answer payload, calling frag for each fragment (whose
// bytes alias p). It checks the whole payload before calling frag.
func parseDown(p []byte, frag func(downFrag)) (more bool, err error) {
	if len(p) < downHeaderLen || p[0]&0xf0 != flagVersion || p[0]&0x0e != 0 {
		return false, errFormat
	}
	more = p[0]&flagMore != 0
	for pass := 0; pass < 2; pass++ {
		q := p[downHeaderLen:]
		for len(q) > 0 {
			if len(q) < downFragHdr {
				return false, errFormat
			}
			f := downFrag{id: binary.BigEndian.Uint16(q[0:2]), idx: q[2], count: q[3]}
			n := int(binary.BigEndian.Uint16(q[4:6]))
			if n == 0 || len(q) < downFragHdr+n || f.count == 0 || f.idx >= f.count || f.count > 16 {
				return false, errFormat
			}
			f.b = q[downFragHdr : downFragHdr+n]
			q = q[downFragHdr+n:]
			if pass == 1 {
				frag(f)
			}
		}
	}
	return more, nil
}

// appendTXT appends to b the TXT rdata that carries p: character-strings of
// at most 255 bytes. An empty p is one empty string.
func appendTXT(b, p []byte) []byte {
	if len(p) == 0 {
		return append(b, 0)
	}
	for len(p) > 0 {
		n := min(len(p), 255)
		b = append(b, byte(n))
		b = append(b, p[:n]...)
		p = p[n:]
	}
	return b
}

// txtLen is the rdata length of appendTXT(nil, p) for len(p) == n.
func txtLen(n int) int {
	if n == 0 {
		return 1
	}
	return n + (n+254)/255
}

// parseTXT returns the bytes of the character-strings in rdata, joined.
func parseTXT(rdata []byte) ([]byte, error) {
	out := make([]byte, 0, len(rdata))
	for len(rdata) > 0 {
		n := int(rdata[0])
		if len(rdata) < 1+n {
			return nil, errFormat
		}
		out = append(out, rdata[1:1+n]...)
		rdata = rdata[1+n:]
	}
	return out, nil
}
