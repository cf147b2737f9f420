package datachan

import (
	"bytes"
	"io"
	"net"
	"testing"
)

// countingConn is a connection whose reads come from in and whose writes
// go to out, counting both: the kernel's side of a batchConn.
type countingConn struct {
	net.Conn
	in             io.Reader
	out            bytes.Buffer
	reads, writes  int
	largestRequest int
}

func (c *countingConn) Read(p []byte) (int, error) {
	c.reads++
	c.largestRequest = max(c.largestRequest, len(p))
	return c.in.Read(p)
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes++
	return c.out.Write(p)
}

// pattern is n bytes that differ from one offset to the next.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7 / 3)
	}
	return b
}

func TestBatchConnGathersTheRecordsOfAWrite(t *testing.T) {
	const records = 40
	record := pattern(maxRecord)
	c := &countingConn{}
	b := newBatchConn(c)

	b.begin()
	for range records {
		if _, err := b.Write(record); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.end(); err != nil {
		t.Fatal(err)
	}
	if want := records*maxRecord/batchBytes + 1; c.writes > want {
		t.Errorf("%d records of a Write took %d system calls, want at most %d", records, c.writes, want)
	}
	alert := []byte("an alert, outside any Write")
	if _, err := b.Write(alert); err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Repeat(record, records), alert...)
	if !bytes.Equal(c.out.Bytes(), want) {
		t.Error("the connection did not get every record, in order, then the alert")
	}
}

func TestBatchConnReadsManyRecordsAtOnce(t *testing.T) {
	data := pattern(4 << 20)
	c := &countingConn{in: bytes.NewReader(data)}
	b := newBatchConn(c)

	// tls.Conn asks for a record at a time.
	var got []byte
	record := make([]byte, maxRecord)
	for len(got) < len(data) {
		n, err := b.Read(record)
		if err != nil {
			t.Fatalf("read after %d bytes: %v", len(got), err)
		}
		got = append(got, record[:n]...)
	}
	if !bytes.Equal(got, data) {
		t.Fatal("the bytes read differ from those sent")
	}
	if c.largestRequest < readBytes {
		t.Errorf("reads asked the kernel for at most %d bytes, want %d", c.largestRequest, readBytes)
	}
	if want := len(data)/readBytes + 1; c.reads > want {
		t.Errorf("%d bytes took %d reads of the connection, want at most %d", len(data), c.reads, want)
	}
}
