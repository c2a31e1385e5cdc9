// The waypoint library's public surface (what `weft waypoint` builds on).
export { Waypoint, type WaypointOptions } from './waypoint.ts';
export { WaypointConfig, type WaypointXdsOptions } from './xds/config.ts';
export { MeshIndex, type ServiceTarget } from './mesh.ts';
export { DEFAULT_HTTP_LIMITS, type HttpLimits } from './inbound/tunnels.ts';
export { planRequest, type Plan } from './router/plan.ts';
export type { RoutingTable } from './router/table.ts';
export { MeshWatch } from './xds/mesh-watch.ts';
