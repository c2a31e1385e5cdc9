// Environment for a `weft control` process, set by everything that launches one (the lab, the
// Deployment, the scale bench).
//
// glibc's malloc raises its mmap threshold to the largest block freed so far. After the first
// multi-megabyte response (a new agent's full sync) is freed, later ones come from the heap, whose
// freed space is rarely returned to the system: a hundred agents syncing left ~250 MB of RSS
// behind that the process no longer used. A fixed threshold keeps large buffers in mmap, which
// returns them when they are freed. Measured in `make bench` (bench/control-scale.ts).
export const CONTROL_PLANE_ENV: Readonly<Record<string, string>> = { GLIBC_TUNABLES: 'glibc.malloc.mmap_threshold=131072' };
