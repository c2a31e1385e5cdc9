// What the xDS client (client.ts) and its callers exchange: a watch per type URL and the updates it applies.

/** One resource of a response: its name, version and body (the serialized message inside the Any). */
export interface XdsResource {
  name: string;
  version: string;
  body: Uint8Array;
}

/** What a response changes for one type: resources added or replaced, names removed. */
export interface XdsUpdate {
  typeUrl: string;
  /** The response's system_version_info (Delta) or version_info (SotW). */
  version: string;
  resources: XdsResource[];
  removed: string[];
}

export interface XdsWatch {
  typeUrl: string;
  /** Resource names to subscribe to; omitted for every resource of the type (a wildcard). */
  names?: string[];
  /**
   * Applies one response: decode every resource and apply all of it, or throw (the message is the
   * NACK's error_detail) and change nothing. Called also when the client drops names it no longer
   * subscribes to (SotW types that are not full-state), where throwing is only logged.
   */
  apply(update: XdsUpdate): void;
  /** SotW only: a resource's name, read from its body (Delta names every resource itself). */
  nameOf?(body: Uint8Array): string;
  /**
   * SotW only: every response carries each subscribed resource, so one left out was removed. The
   * default is true except for RouteConfiguration, ClusterLoadAssignment, Secret and VirtualHost,
   * which the xDS protocol lets a server send one at a time.
   */
  fullState?: boolean;
}
