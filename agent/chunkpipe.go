package agent

import (
	"io"
	"sync"
)

// archiveReadAhead is how many received messages of an archive upload may
// wait for the importer.
const archiveReadAhead = 8

// chunkPipe hands received byte slices from one goroutine to a reader in
// another, up to a fixed number ahead, without copying them: unlike
// io.Pipe, whose Write waits for Read, the receiver can fetch the next
// message while the importer still verifies the previous one. The writer
// must not modify a slice after writing it.
type chunkPipe struct {
	chunks chan []byte
	cur    []byte

	once sync.Once
	done chan struct{} // closed when the reader gives up

	mu  sync.Mutex
	err error // why the writer stopped; io.EOF on a clean end
}

type chunkPipeWriter struct{ p *chunkPipe }

func newChunkPipe(ahead int) (*chunkPipe, *chunkPipeWriter) {
	p := &chunkPipe{chunks: make(chan []byte, ahead), done: make(chan struct{})}
	return p, &chunkPipeWriter{p}
}

// Read reads from the current chunk, then from the next one.
func (p *chunkPipe) Read(b []byte) (int, error) {
	for len(p.cur) == 0 {
		chunk, ok := <-p.chunks
		if !ok {
			p.mu.Lock()
			defer p.mu.Unlock()
			return 0, p.err
		}
		p.cur = chunk
	}
	n := copy(b, p.cur)
	p.cur = p.cur[n:]
	return n, nil
}

// Close tells the writer that nothing more will be read.
func (p *chunkPipe) Close() error {
	p.once.Do(func() { close(p.done) })
	return nil
}

// Write queues chunk for the reader; false means the reader has closed the
// pipe and the writer should stop.
func (w *chunkPipeWriter) Write(chunk []byte) bool {
	if len(chunk) == 0 {
		return true
	}
	select {
	case w.p.chunks <- chunk:
		return true
	case <-w.p.done:
		return false
	}
}

// Close ends the stream cleanly: the reader gets io.EOF after the queued
// chunks.
func (w *chunkPipeWriter) Close() { w.CloseWithError(nil) }

// CloseWithError ends the stream: the reader gets err (io.EOF when nil)
// after the queued chunks. Call it once.
func (w *chunkPipeWriter) CloseWithError(err error) {
	if err == nil {
		err = io.EOF
	}
	w.p.mu.Lock()
	w.p.err = err
	w.p.mu.Unlock()
	close(w.p.chunks)
}
