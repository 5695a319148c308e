// The part of Miniflare's API the tests use (its own declarations need `@types/node` and
// the Workers types, which are not dependencies), each a narrower form of its declaration
// in `miniflare`. Grow it when a test uses another member; do not loosen it.

declare module 'miniflare' {
  /** A module of a worker: its name (its path under `modulesRoot`) and kind. */
  export interface ModuleDefinition {
    type: 'ESModule' | 'CompiledWasm';
    path: string;
    contents?: string | Uint8Array;
  }

  export interface MiniflareOptions {
    modulesRoot: string;
    modules: ModuleDefinition[];
    compatibilityDate: string;
    bindings?: { [name: string]: string };
  }

  /** workerd running one worker, reached over loopback. */
  export class Miniflare {
    constructor(options: MiniflareOptions);
    dispatchFetch(url: string, init?: { method?: string; headers?: { [name: string]: string }; body?: string | Uint8Array }): Promise<Response>;
    dispose(): Promise<void>;
  }
}
