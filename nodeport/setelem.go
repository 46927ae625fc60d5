package nodeport

import (
	"encoding/binary"
	"fmt"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// setElemBatch writes the netlink messages that add elements to one set, encoded (elementEncoder)
// straight into one buffer per message. google/nftables marshals each element through a dozen
// small attribute slices and buffers: at a cold start's 150k elements that was about 60 MB of
// garbage and a tenth of a second of CPU on the critical path. The layout is the one that library
// (and nft) sends.
type setElemBatch struct {
	family nftables.TableFamily
	set    string
	msgs   []netlink.Message
	b      []byte // the message being written
	list   int    // where its element list starts
	n      int    // and how many elements it has
}

// attr starts an attribute and returns where, for end.
func (w *setElemBatch) attr(typ uint16) int {
	at := len(w.b)
	w.b = binary.NativeEndian.AppendUint16(w.b, 0)
	w.b = binary.NativeEndian.AppendUint16(w.b, typ)
	return at
}

// end closes the attribute started at at: its length, then padding to 4 bytes.
func (w *setElemBatch) end(at int) {
	binary.NativeEndian.PutUint16(w.b[at:], uint16(len(w.b)-at))
	for len(w.b)%4 != 0 {
		w.b = append(w.b, 0)
	}
}

func (w *setElemBatch) bytesAttr(typ uint16, data []byte) {
	at := w.attr(typ)
	w.b = append(w.b, data...)
	w.end(at)
}

func (w *setElemBatch) stringAttr(typ uint16, s string) {
	at := w.attr(typ)
	w.b = append(w.b, s...)
	w.b = append(w.b, 0)
	w.end(at)
}

// maxElementListBytes bounds a message's element list so that one more element (at most a few
// hundred bytes, with a verdict's chain name) keeps it under the 64 KiB an attribute may hold.
const maxElementListBytes = 60 << 10

// element adds one element, encoded by enc; false if enc cannot encode it.
func (w *setElemBatch) element(enc *elementEncoder, key, value []string) bool {
	// A message's element list is one attribute, whose length has 16 bits: ip6 slot elements are
	// about 70 bytes, so fewer than maxElementsPerMessage of them fit.
	if w.b == nil || w.n == maxElementsPerMessage || len(w.b)-w.list > maxElementListBytes {
		w.finish()
		w.b = make([]byte, 0, 64<<10)
		w.b = append(w.b, byte(w.family), unix.NFNETLINK_V0, 0, 0)
		w.stringAttr(unix.NFTA_SET_ELEM_LIST_SET, w.set)
		w.stringAttr(unix.NFTA_SET_ELEM_LIST_TABLE, TableName)
		w.list, w.n = w.attr(unix.NFTA_SET_ELEM_LIST_ELEMENTS|unix.NLA_F_NESTED), 0
	}
	w.n++
	item := w.attr(uint16(w.n) | unix.NLA_F_NESTED)
	keyAttr := w.attr(unix.NFTA_SET_ELEM_KEY | unix.NLA_F_NESTED)
	if !w.encoded(unix.NFTA_DATA_VALUE, enc, func() bool { return enc.key(w.set, key) }) {
		return false
	}
	w.end(keyAttr)
	switch {
	case len(value) == 0:
	case isEndpoint(w.set, value):
		data := w.attr(unix.NFTA_SET_ELEM_DATA | unix.NLA_F_NESTED)
		if !w.encoded(unix.NFTA_DATA_VALUE, enc, func() bool { return enc.endpoint(value) }) {
			return false
		}
		w.end(data)
	default:
		v, ok := enc.verdict(value)
		if !ok {
			return false
		}
		data := w.attr(unix.NFTA_SET_ELEM_DATA | unix.NLA_F_NESTED)
		verdict := w.attr(unix.NFTA_DATA_VERDICT | unix.NLA_F_NESTED)
		w.bytesAttr(unix.NFTA_VERDICT_CODE, binary.BigEndian.AppendUint32(nil, uint32(v.Kind)))
		if v.Chain != "" {
			w.stringAttr(unix.NFTA_VERDICT_CHAIN, v.Chain)
		}
		w.end(verdict)
		w.end(data)
	}
	w.end(item)
	return true
}

// encoded writes an attribute whose payload encode appends to enc's arena, lent the message.
func (w *setElemBatch) encoded(typ uint16, enc *elementEncoder, encode func() bool) bool {
	at := w.attr(typ)
	enc.buf = w.b
	ok := encode()
	w.b, enc.buf = enc.buf, nil
	w.end(at)
	return ok
}

// finish closes the message being written, if any.
func (w *setElemBatch) finish() {
	if w.b == nil {
		return
	}
	w.end(w.list)
	w.msgs = append(w.msgs, netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_NEWSETELEM),
			Flags: netlink.Request | netlink.Acknowledge | netlink.Create,
		},
		Data: w.b,
	})
	w.b = nil
}

// sendBatch sends msgs as one batch, which the kernel applies atomically, over a socket of the
// calling thread's network namespace, and waits for every message's acknowledgement.
func sendBatch(msgs []netlink.Message) error {
	conn, err := netlink.Dial(unix.NETLINK_NETFILTER, nil)
	if err != nil {
		return fmt.Errorf("opening netlink: %w", err)
	}
	defer conn.Close()
	size := 0
	for _, m := range msgs {
		size += 16 + len(m.Data)
	}
	if err := forceBuffers(conn, max(1<<20, 2*size)); err != nil {
		return fmt.Errorf("sizing the netlink send buffer: %w", err)
	}
	batchHeader := []byte{unix.AF_UNSPEC, unix.NFNETLINK_V0, 0, unix.NFNL_SUBSYS_NFTABLES}
	batch := make([]netlink.Message, 0, len(msgs)+2)
	batch = append(batch, netlink.Message{Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_BEGIN, Flags: netlink.Request}, Data: batchHeader})
	batch = append(batch, msgs...)
	batch = append(batch, netlink.Message{Header: netlink.Header{Type: unix.NFNL_MSG_BATCH_END, Flags: netlink.Request}, Data: batchHeader})
	if _, err := conn.SendMessages(batch); err != nil {
		return fmt.Errorf("sending: %w", err)
	}
	for acks := 0; acks < len(msgs); {
		replies, err := conn.Receive()
		if err != nil {
			return err
		}
		for _, r := range replies {
			if r.Header.Type == netlink.Error {
				acks++
			}
		}
	}
	return nil
}
