package bundle

import (
	"errors"
	"io"
	"sync"
)

// readAheadChunks is how many chunks of copyBufferSize a readAhead may
// hold ahead of its consumer.
const readAheadChunks = 4

// readAhead reads r to its end in its own goroutine, up to readAheadChunks
// chunks ahead of the consumer, so that receiving and decompressing the
// next chunk of an archive overlaps hashing and writing this one: import
// otherwise does the three one after another while a core stays idle.
type readAhead struct {
	full chan []byte // chunks read, in order; closed at the end
	free chan []byte // buffers given back
	stop chan struct{}
	done chan struct{} // closed when the goroutine has returned
	err  error         // the read error other than io.EOF; valid after done
}

func newReadAhead(r io.Reader) *readAhead {
	ra := &readAhead{
		full: make(chan []byte, readAheadChunks),
		free: make(chan []byte, readAheadChunks),
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	for range readAheadChunks {
		ra.free <- getChunk()
	}
	go ra.run(r)
	return ra
}

// chunks recycles the buffers of copies: a checkpoint has dozens of
// files, and four fresh chunks for each would be mostly garbage.
var chunks = sync.Pool{New: func() any { return make([]byte, copyBufferSize) }}

func getChunk() []byte { return chunks.Get().([]byte) }

func putChunk(b []byte) {
	chunks.Put(b[:cap(b)])
}

func (ra *readAhead) run(r io.Reader) {
	defer close(ra.done)
	defer close(ra.full)
	for {
		var buf []byte
		select {
		case buf = <-ra.free:
		case <-ra.stop:
			return
		}
		n, err := io.ReadFull(r, buf)
		if n > 0 {
			select {
			case ra.full <- buf[:n]:
			case <-ra.stop:
				return
			}
		}
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return
		case err != nil:
			ra.err = err
			return
		}
	}
}

// WriteTo writes every chunk to w in order, giving each buffer back once
// w has returned, and stops the reader when w fails. It returns the bytes
// written and w's error or the read error.
func (ra *readAhead) WriteTo(w io.Writer) (int64, error) {
	defer ra.recycle()
	var total int64
	for chunk := range ra.full {
		n, err := w.Write(chunk)
		total += int64(n)
		ra.free <- chunk[:cap(chunk)]
		if err != nil {
			ra.close()
			return total, err
		}
	}
	<-ra.done
	return total, ra.err
}

// close stops the reader and waits for it, so that nothing reads the
// source afterwards.
func (ra *readAhead) close() {
	close(ra.stop)
	<-ra.done
}

// recycle gives every buffer back to the pool once the reader has
// returned: each is then either given back (free) or left unread (full,
// closed by then).
func (ra *readAhead) recycle() {
	for chunk := range ra.full {
		putChunk(chunk)
	}
	for {
		select {
		case chunk := <-ra.free:
			putChunk(chunk)
		default:
			return
		}
	}
}
