package proxy

import (
	"bytes"
	"errors"

	"golang.org/x/net/http/httpguts"
)

// chunkedBody follows the chunked framing of a response body (RFC 9112 7.1) as its bytes arrive, so
// that the event loop can relay the body as the backend framed it and still know where it ends. It
// accepts what net/http's chunked reader and trailer parsing accept, with the same limits, so that
// a body the goroutine lane would abort is aborted on the loop too; trailer fields are held to
// header field syntax without obsolete line folding.
type chunkedBody struct {
	state   uint8
	left    uint64 // data bytes left in the chunk
	excess  int64  // framing bytes beyond the allowance, as net/http counts them
	trailer int    // bytes of the trailer section so far
}

// chunkedBody states.
const (
	chSize    = iota // at a chunk-size line
	chData           // in chunk data
	chDataEnd        // at the CRLF after chunk data
	chTrailer        // at a trailer field line or the empty line that ends the body
	chDone
)

const (
	chunkLineMax  = 4096     // net/http's limit on a chunk-size line
	chunkExcess   = 16 << 10 // net/http's limit on framing beyond 16 bytes a chunk and twice its data
	chunkTrailers = 8 << 10  // the trailer section must fit in a loop buffer with the bytes after it
)

var (
	errChunkLine     = errors.New("malformed chunked encoding: a line without CRLF or with a CR inside")
	errChunkLong     = errors.New("malformed chunked encoding: chunk-size line too long")
	errChunkSize     = errors.New("malformed chunked encoding: invalid chunk size")
	errChunkOverflow = errors.New("malformed chunked encoding: chunk size too large")
	errChunkCRLF     = errors.New("malformed chunked encoding: chunk data not followed by CRLF")
	errChunkExcess   = errors.New("malformed chunked encoding: too much non-data")
	errTrailer       = errors.New("malformed trailer field after a chunked body")
	errTrailerLong   = errors.New("trailer section after a chunked body too long")
)

func (p *chunkedBody) done() bool { return p.state == chDone }

// scan consumes the framing and data at the start of b, up to the end of the body or to an
// incomplete line, and returns how many bytes it consumed and how many of them are data. After an
// error the bytes before the malformed element are still valid (n counts them).
func (p *chunkedBody) scan(b []byte) (n int, data int64, err error) {
	for p.state != chDone {
		k, d, err := p.step(b[n:])
		n, data = n+k, data+d
		if err != nil || k == 0 {
			return n, data, err
		}
	}
	return n, data, nil
}

// step consumes one element at the start of b: a line, the CRLF after data, or data. It returns 0
// without an error when b does not hold the element whole (data is consumed as far as it goes).
func (p *chunkedBody) step(b []byte) (n int, data int64, err error) {
	switch p.state {
	case chData:
		k := uint64(len(b))
		if k > p.left {
			k = p.left
		}
		if p.left -= k; p.left == 0 {
			p.state = chDataEnd
		}
		return int(k), int64(k), nil
	case chDataEnd:
		if len(b) == 0 || len(b) == 1 && b[0] == '\r' {
			return 0, 0, nil
		}
		if b[0] != '\r' || b[1] != '\n' {
			return 0, 0, errChunkCRLF
		}
		p.state = chSize
		return 2, 0, nil
	case chSize:
		line, n, err := chunkLine(b, chunkLineMax+1)
		if err != nil || n == 0 {
			if err == errLineLong {
				err = errChunkLong
			}
			return 0, 0, err
		}
		if len(line) >= chunkLineMax {
			return 0, 0, errChunkLong
		}
		p.excess += int64(n)
		for len(line) > 0 && (line[len(line)-1] == ' ' || line[len(line)-1] == '\t') {
			line = line[:len(line)-1]
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i] // extensions are passed on as they are
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return 0, 0, err
		}
		// As net/http: 16 bytes of framing a chunk and twice its data are free.
		if size < 1<<40 {
			p.excess = max(p.excess-16-2*int64(size), 0)
		} else {
			p.excess = 0
		}
		if p.excess > chunkExcess {
			return 0, 0, errChunkExcess
		}
		p.left = size
		p.state = chData
		if size == 0 {
			p.state = chTrailer
		}
		return n, 0, nil
	case chTrailer:
		line, n, err := chunkLine(b, chunkTrailers-p.trailer)
		if err == errLineLong || p.trailer+n > chunkTrailers {
			return 0, 0, errTrailerLong
		}
		if err != nil || n == 0 {
			if err != nil {
				// net/http's textproto takes bare LF line ends here; passed on as they are, they
				// might make another parser see other fields.
				err = errTrailer
			}
			return 0, 0, err
		}
		p.trailer += n
		if len(line) == 0 {
			p.state = chDone
			return n, 0, nil
		}
		colon := bytes.IndexByte(line, ':')
		value := ""
		if colon > 0 && colon+1 < len(line) {
			value = alias(line[colon+1:])
		}
		if colon <= 0 || !httpguts.ValidHeaderFieldName(alias(line[:colon])) || !httpguts.ValidHeaderFieldValue(trimOWS(value)) {
			return 0, 0, errTrailer // obsolete folding too: the line starts with a space
		}
		return n, 0, nil
	}
	return 0, 0, nil
}

var errLineLong = errors.New("line too long")

// chunkLine returns the line at the start of b without its CRLF, and its length with it; n is 0 when
// b holds no whole line yet and errLineLong when the line is max bytes or more without its end.
func chunkLine(b []byte, max int) (line []byte, n int, err error) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		if len(b) >= max {
			return nil, 0, errLineLong
		}
		return nil, 0, nil
	}
	// net/http takes no bare LF in chunked framing, nor a CR but before the LF.
	if i == 0 || bytes.IndexByte(b[:i], '\r') != i-1 {
		return nil, 0, errChunkLine
	}
	return b[:i-1], i + 1, nil
}

// parseChunkSize parses a chunk size as net/http's parseHexUint: hex digits only, at most 16.
func parseChunkSize(v []byte) (uint64, error) {
	if len(v) == 0 {
		return 0, errChunkSize
	}
	var n uint64
	for i, c := range v {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, errChunkSize
		}
		if i == 16 {
			return 0, errChunkOverflow
		}
		n = n<<4 | uint64(c)
	}
	return n, nil
}
