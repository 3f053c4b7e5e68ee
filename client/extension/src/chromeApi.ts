/**
 * The few extension APIs the extension uses, typed here (no @types/chrome dependency). Only for the extension's
 * isolated world, service worker and popup: a MAIN-world script has no `chrome.runtime`.
 */
export interface ChromeApi {
  runtime: {
    sendMessage(message: unknown): Promise<unknown>;
    onMessage: {
      addListener(
        fn: (
          message: unknown,
          sender: { id?: string; url?: string },
          sendResponse: (r: unknown) => void,
        ) => boolean | void,
      ): void;
    };
    readonly id: string;
  };
  storage: {
    local: {
      get(key: string): Promise<Record<string, unknown>>;
      set(items: Record<string, unknown>): Promise<void>;
      remove(key: string): Promise<void>;
    };
    onChanged: {
      addListener(
        fn: (changes: Record<string, { oldValue?: unknown; newValue?: unknown }>, area: string) => void,
      ): void;
    };
  };
}

export const chromeApi: ChromeApi = (globalThis as unknown as { chrome: ChromeApi }).chrome;
