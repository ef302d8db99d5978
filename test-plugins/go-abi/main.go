// A Proxy-Wasm plugin in standard Go (GOOS=wasip1, -buildmode=c-shared),
// standard library only, against the ABI directly. It exercises what a Go
// SDK plugin uses: headers, bodies, shared data, shared queues, an HTTP call
// with pause and resume, and metrics.
//
// Per request: counts it (metric go_requests), enqueues the path on its own
// queue, pauses and asks the cluster "auth" for /check<path>; "allow" resumes
// (the response then gets x-go-shared and x-go-count, and " (go)" appended to
// its body), anything else answers 403.
package main

import (
	"strconv"
	"unsafe"
)

//go:wasmimport env proxy_log
func proxyLog(level uint32, ptr unsafe.Pointer, size uint32) uint32

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(mapType uint32, keyPtr unsafe.Pointer, keySize uint32, retPtr *uint32, retSize *uint32) uint32

//go:wasmimport env proxy_add_header_map_value
func proxyAddHeaderMapValue(mapType uint32, keyPtr unsafe.Pointer, keySize uint32, valuePtr unsafe.Pointer, valueSize uint32) uint32

//go:wasmimport env proxy_get_buffer_bytes
func proxyGetBufferBytes(bufferType, start, maxSize uint32, retPtr *uint32, retSize *uint32) uint32

//go:wasmimport env proxy_set_buffer_bytes
func proxySetBufferBytes(bufferType, start, size uint32, dataPtr unsafe.Pointer, dataSize uint32) uint32

//go:wasmimport env proxy_set_shared_data
func proxySetSharedData(keyPtr unsafe.Pointer, keySize uint32, valuePtr unsafe.Pointer, valueSize uint32, cas uint32) uint32

//go:wasmimport env proxy_get_shared_data
func proxyGetSharedData(keyPtr unsafe.Pointer, keySize uint32, retPtr *uint32, retSize *uint32, cas *uint32) uint32

//go:wasmimport env proxy_register_shared_queue
func proxyRegisterSharedQueue(namePtr unsafe.Pointer, nameSize uint32, id *uint32) uint32

//go:wasmimport env proxy_enqueue_shared_queue
func proxyEnqueueSharedQueue(id uint32, ptr unsafe.Pointer, size uint32) uint32

//go:wasmimport env proxy_dequeue_shared_queue
func proxyDequeueSharedQueue(id uint32, retPtr *uint32, retSize *uint32) uint32

//go:wasmimport env proxy_define_metric
func proxyDefineMetric(kind uint32, namePtr unsafe.Pointer, nameSize uint32, id *uint32) uint32

//go:wasmimport env proxy_increment_metric
func proxyIncrementMetric(id uint32, offset int64) uint32

//go:wasmimport env proxy_get_metric
func proxyGetMetric(id uint32, value *uint64) uint32

//go:wasmimport env proxy_http_call
func proxyHttpCall(upstreamPtr unsafe.Pointer, upstreamSize uint32, headersPtr unsafe.Pointer, headersSize uint32, bodyPtr unsafe.Pointer, bodySize uint32, trailersPtr unsafe.Pointer, trailersSize uint32, timeout uint32, token *uint32) uint32

//go:wasmimport env proxy_set_effective_context
func proxySetEffectiveContext(ctx uint32) uint32

//go:wasmimport env proxy_continue_stream
func proxyContinueStream(stream uint32) uint32

//go:wasmimport env proxy_send_local_response
func proxySendLocalResponse(status uint32, detailsPtr unsafe.Pointer, detailsSize uint32, bodyPtr unsafe.Pointer, bodySize uint32, headersPtr unsafe.Pointer, headersSize uint32, grpcStatus int32) uint32

const (
	mapRequestHeaders  = 0
	mapResponseHeaders = 2
	bufferResponseBody = 1
	bufferCallBody     = 4
	counter            = 0
)

func ptr(s string) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(unsafe.StringData(s))
}

func bytesPtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

func logInfo(msg string) { proxyLog(2, ptr(msg), uint32(len(msg))) }

// Memory handed to the host stays reachable until we copy it out.
var allocations = map[uint32][]byte{}

//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size uint32) uint32 {
	if size == 0 {
		size = 1
	}
	buf := make([]byte, size)
	addr := uint32(uintptr(unsafe.Pointer(&buf[0])))
	allocations[addr] = buf
	return addr
}

func take(addr, size uint32) string {
	buf, ok := allocations[addr]
	delete(allocations, addr)
	if !ok || size == 0 {
		return ""
	}
	return string(buf[:size])
}

// pairs encodes a header map in the ABI's pairs format.
func pairs(kv ...string) []byte {
	n := len(kv) / 2
	out := make([]byte, 4+8*n)
	put := func(at int, v uint32) {
		out[at], out[at+1], out[at+2], out[at+3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
	}
	put(0, uint32(n))
	for i := 0; i < n; i++ {
		put(4+8*i, uint32(len(kv[2*i])))
		put(8+8*i, uint32(len(kv[2*i+1])))
	}
	for _, s := range kv {
		out = append(out, s...)
		out = append(out, 0)
	}
	return out
}

var (
	requestsMetric uint32
	queueID        uint32
	pendingCalls   = map[uint32]uint32{} // call token -> stream context
	paths          = map[uint32]string{} // stream context -> path
)

//go:wasmexport proxy_abi_version_0_2_1
func proxyAbiVersion() {}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(ctx, parent uint32) {}

//go:wasmexport proxy_on_vm_start
func proxyOnVmStart(ctx, size uint32) uint32 {
	name := "go_requests"
	proxyDefineMetric(counter, ptr(name), uint32(len(name)), &requestsMetric)
	key, value := "go_key", "shared-by-go"
	proxySetSharedData(ptr(key), uint32(len(key)), ptr(value), uint32(len(value)), 0)
	queue := "go_queue"
	proxyRegisterSharedQueue(ptr(queue), uint32(len(queue)), &queueID)
	logInfo("go abi plugin started")
	return 1
}

//go:wasmexport proxy_on_configure
func proxyOnConfigure(ctx, size uint32) uint32 { return 1 }

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(ctx, headers, eos uint32) uint32 {
	proxyIncrementMetric(requestsMetric, 1)
	key := ":path"
	var p, n uint32
	path := ""
	if proxyGetHeaderMapValue(mapRequestHeaders, ptr(key), uint32(len(key)), &p, &n) == 0 {
		path = take(p, n)
	}
	paths[ctx] = path
	proxyEnqueueSharedQueue(queueID, ptr(path), uint32(len(path)))
	upstream := "auth"
	h := pairs(":method", "GET", ":path", "/check"+path, ":authority", "auth")
	var token uint32
	if proxyHttpCall(ptr(upstream), uint32(len(upstream)), bytesPtr(h), uint32(len(h)), nil, 0, nil, 0, 5000, &token) != 0 {
		body := "call not sent\n"
		proxySendLocalResponse(500, nil, 0, ptr(body), uint32(len(body)), nil, 0, -1)
		return 1
	}
	pendingCalls[token] = ctx
	return 1 // pause until the call answers
}

//go:wasmexport proxy_on_http_call_response
func proxyOnHttpCallResponse(root, token, headers, bodySize, trailers uint32) {
	ctx, ok := pendingCalls[token]
	if !ok {
		return
	}
	delete(pendingCalls, token)
	proxySetEffectiveContext(ctx)
	var p, n uint32
	body := ""
	if headers > 0 && proxyGetBufferBytes(bufferCallBody, 0, bodySize, &p, &n) == 0 {
		body = take(p, n)
	}
	if body == "allow" {
		proxyContinueStream(0)
		return
	}
	deny := "go says no\n"
	proxySendLocalResponse(403, nil, 0, ptr(deny), uint32(len(deny)), nil, 0, -1)
}

//go:wasmexport proxy_on_response_headers
func proxyOnResponseHeaders(ctx, headers, eos uint32) uint32 {
	key := "go_key"
	var p, n, cas uint32
	if proxyGetSharedData(ptr(key), uint32(len(key)), &p, &n, &cas) == 0 {
		value := take(p, n)
		name := "x-go-shared"
		proxyAddHeaderMapValue(mapResponseHeaders, ptr(name), uint32(len(name)), ptr(value), uint32(len(value)))
	}
	var count uint64
	if proxyGetMetric(requestsMetric, &count) == 0 {
		value := strconv.FormatUint(count, 10)
		name := "x-go-count"
		proxyAddHeaderMapValue(mapResponseHeaders, ptr(name), uint32(len(name)), ptr(value), uint32(len(value)))
	}
	return 0
}

//go:wasmexport proxy_on_response_body
func proxyOnResponseBody(ctx, size, eos uint32) uint32 {
	if eos == 0 {
		return 1
	}
	suffix := " (go)"
	proxySetBufferBytes(bufferResponseBody, size, 0, ptr(suffix), uint32(len(suffix)))
	return 0
}

//go:wasmexport proxy_on_queue_ready
func proxyOnQueueReady(root, queue uint32) {
	var p, n uint32
	if proxyDequeueSharedQueue(queue, &p, &n) == 0 {
		logInfo("go dequeued " + take(p, n))
	}
}

//go:wasmexport proxy_on_done
func proxyOnDone(ctx uint32) uint32 { return 1 }

//go:wasmexport proxy_on_log
func proxyOnLog(ctx uint32) {}

//go:wasmexport proxy_on_delete
func proxyOnDelete(ctx uint32) { delete(paths, ctx) }

func main() {}
