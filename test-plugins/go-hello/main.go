// Tiny Proxy-Wasm (ABI 0.2.x) test plugin written in standard Go (not TinyGo),
// standard library only. Talks to the host ABI directly via go:wasmimport /
// go:wasmexport.
//
// Build:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o go-hello.wasm .
//
// With -buildmode=c-shared the module exports `_initialize` (not `_start`);
// the host must call `_initialize` once before any other export.
package main

import (
	"fmt"
	"os"
	"unsafe"
)

// ---------------------------------------------------------------------------
// Host imports (module "env").
//
// All integer parameters are wasm i32. Pointer-typed parameters (*uint32,
// *byte, unsafe.Pointer) are lowered to i32 linear-memory addresses.
// ---------------------------------------------------------------------------

//go:wasmimport env proxy_log
func proxyLog(level uint32, msgPtr unsafe.Pointer, msgLen uint32) uint32

//go:wasmimport env proxy_get_buffer_bytes
func proxyGetBufferBytes(bufType, start, maxSize uint32, retPtr *uint32, retLen *uint32) uint32

//go:wasmimport env proxy_get_header_map_value
func proxyGetHeaderMapValue(mapType uint32, keyPtr unsafe.Pointer, keyLen uint32, retPtr *uint32, retLen *uint32) uint32

//go:wasmimport env proxy_add_header_map_value
func proxyAddHeaderMapValue(mapType uint32, keyPtr unsafe.Pointer, keyLen uint32, valPtr unsafe.Pointer, valLen uint32) uint32

const (
	logLevelInfo = 2

	bufferPluginConfiguration = 7

	mapRequestHeaders  = 0
	mapResponseHeaders = 2

	statusOK = 0
)

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

// strPtr returns a pointer to the bytes of s (nil for empty strings).
func strPtr(s string) unsafe.Pointer {
	if len(s) == 0 {
		return nil
	}
	return unsafe.Pointer(unsafe.StringData(s))
}

func logInfo(msg string) {
	proxyLog(logLevelInfo, strPtr(msg), uint32(len(msg)))
}

// allocations keeps every buffer handed out via proxy_on_memory_allocate
// reachable, so the (non-moving) Go GC does not free memory the host writes to.
var allocations = map[uint32][]byte{}

// takeHostBuffer copies len bytes at addr (previously allocated via
// proxy_on_memory_allocate and filled by the host) into a Go string and
// releases the allocation.
func takeHostBuffer(addr, n uint32) string {
	if addr == 0 || n == 0 {
		if addr != 0 {
			delete(allocations, addr)
		}
		return ""
	}
	var s string
	if buf, ok := allocations[addr]; ok && uint32(len(buf)) >= n {
		s = string(buf[:n])
	} else {
		// Not one of ours (should not happen); copy straight from linear memory.
		s = string(unsafe.Slice((*byte)(unsafe.Add(nil, addr)), n))
	}
	delete(allocations, addr)
	return s
}

// paths remembers the :path seen per HTTP context.
var paths = map[uint32]string{}

// ---------------------------------------------------------------------------
// Exports
// ---------------------------------------------------------------------------

//go:wasmexport proxy_abi_version_0_2_0
func proxyAbiVersion020() {}

//go:wasmexport proxy_on_memory_allocate
func proxyOnMemoryAllocate(size uint32) uint32 {
	n := size
	if n == 0 {
		n = 1 // always hand out a valid, unique address
	}
	buf := make([]byte, n)
	addr := uint32(uintptr(unsafe.Pointer(&buf[0])))
	allocations[addr] = buf
	return addr
}

//go:wasmexport proxy_on_context_create
func proxyOnContextCreate(ctx, parent uint32) {}

//go:wasmexport proxy_on_vm_start
func proxyOnVmStart(ctx, size uint32) uint32 {
	// fmt and os pull in Go's syscall package, whose WASI imports
	// (fd_fdstat_*, fd_prestat_*, ...) every host must link.
	logInfo(fmt.Sprintf("go plugin vm started, GREETING=%q", os.Getenv("GREETING")))
	return 1
}

//go:wasmexport proxy_on_configure
func proxyOnConfigure(ctx, size uint32) uint32 {
	var ptr, n uint32
	config := ""
	if size > 0 {
		if proxyGetBufferBytes(bufferPluginConfiguration, 0, size, &ptr, &n) == statusOK {
			config = takeHostBuffer(ptr, n)
		}
	}
	logInfo("go plugin configured: " + config)
	return 1
}

//go:wasmexport proxy_on_request_headers
func proxyOnRequestHeaders(ctx, nheaders, eos uint32) uint32 {
	const key = ":path"
	var ptr, n uint32
	path := ""
	if proxyGetHeaderMapValue(mapRequestHeaders, strPtr(key), uint32(len(key)), &ptr, &n) == statusOK {
		path = takeHostBuffer(ptr, n)
	}
	paths[ctx] = path

	const hk, hv = "x-go-plugin", "hello"
	proxyAddHeaderMapValue(mapRequestHeaders, strPtr(hk), uint32(len(hk)), strPtr(hv), uint32(len(hv)))

	logInfo("go plugin saw path " + path)
	return 0 // Continue
}

//go:wasmexport proxy_on_response_headers
func proxyOnResponseHeaders(ctx, nheaders, eos uint32) uint32 {
	const hk = "x-go-plugin"
	path := paths[ctx]
	proxyAddHeaderMapValue(mapResponseHeaders, strPtr(hk), uint32(len(hk)), strPtr(path), uint32(len(path)))
	return 0 // Continue
}

//go:wasmexport proxy_on_done
func proxyOnDone(ctx uint32) uint32 { return 1 }

//go:wasmexport proxy_on_log
func proxyOnLog(ctx uint32) {}

//go:wasmexport proxy_on_delete
func proxyOnDelete(ctx uint32) {
	delete(paths, ctx)
}

func main() {}
