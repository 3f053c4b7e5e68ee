/**
 * The few extension APIs the extension uses, typed here (no @types/chrome dependency). Only for the extension's
 * isolated world, service worker and popup: a MAIN-world script has no `chrome.runtime`.
 */
type StorageArea = {
  get(key: string): Promise<Record<string, unknown>>;
  set(items: Record<string, unknown>): Promise<void>;
  remove(key: string): Promise<void>;
};

/** Who sent a runtime message, as the browser says (not as the message says). */
export interface MessageSender {
  id?: string;
  url?: string;
  /** The sending frame's origin (content scripts: the page's; extension pages: chrome-extension://id). */
  origin?: string;
  /** 0 for a tab's top frame, another number for a subframe; absent for extension pages outside tabs. */
  frameId?: number;
  /** Present for content scripts (and extension pages open in a tab). */
  tab?: { id?: number };
}

export interface ChromeApi {
  runtime: {
    sendMessage(message: unknown): Promise<unknown>;
    onMessage: {
      addListener(
        fn: (message: unknown, sender: MessageSender, sendResponse: (r: unknown) => void) => boolean | void,
      ): void;
    };
    readonly id: string;
  };
  storage: {
    local: StorageArea;
    /** In memory, for the browser session; only the extension's own pages and worker can read it. */
    session: StorageArea;
    onChanged: {
      addListener(
        fn: (changes: Record<string, { oldValue?: unknown; newValue?: unknown }>, area: string) => void,
      ): void;
    };
  };
  /** Without the "tabs" permission: ids, no addresses (the worker learns a tab's site from its content script). */
  tabs: {
    query(q: { active?: boolean; lastFocusedWindow?: boolean }): Promise<{ id?: number }[]>;
    getCurrent(): Promise<{ id?: number } | undefined>;
    onActivated: { addListener(fn: (info: { tabId: number }) => void): void };
    onRemoved: { addListener(fn: (tabId: number) => void): void };
  };
}

export const chromeApi: ChromeApi = (globalThis as unknown as { chrome: ChromeApi }).chrome;
