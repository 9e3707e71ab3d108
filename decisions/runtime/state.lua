-- Apply one event to a user's state and return the snapshot as of that event (event time).
-- Every key is built from KEYS[1] = '{user_id}' (the hash tag), so all share one slot.
-- ARGV: event_id, type, ts_ms, properties JSON, dedup ttl seconds, page (or ''), product (or ''),
--       wanted windowed features (see below; '' = all)
local tag = KEYS[1]
local eid, etype, ts = ARGV[1], ARGV[2], tonumber(ARGV[3])
-- erased user (#17): an event from before the erasure (in flight or replayed) is not
-- theirs any more: dropped before it touches anything (d:erased, see decisions/core/keys.py)
local erased_at = redis.call('GET', 'd:erased:' .. tag)
if erased_at and ts <= tonumber(erased_at) then return {2, 'erased'} end
local seen = 'd:seen:' .. tag .. ':' .. eid
local prev = redis.call('GET', seen)
if prev then return {1, prev} end

local props = cjson.decode(ARGV[4])
local product = ARGV[7]
local page = ARGV[6]
local category = props['category']
local sx = 'd:sx:' .. tag
local ttl = tonumber(ARGV[5])
local st = 'd:st:' .. tag
local cart = 'd:cart:' .. tag
local DAY = 86400000
local MONTH = 30 * DAY
local SESSION_GAP = 30 * 60000
local TYPES = {'page_view', 'product_view', 'click', 'add_to_cart', 'remove_from_cart', 'purchase', 'search'}
local WINDOWS = {{'5m', 300000}, {'1h', 3600000}, {'24h', DAY}, {'30d', MONTH}}
local SX_CAP, SX_KEEP = 3000, 2000  -- entries of the per-scope event log (d:sx)

-- the scalar state, read once; changes are collected and written with one HSET
local sv = {}
local flat = redis.call('HGETALL', st)
for i = 1, #flat, 2 do sv[flat[i]] = flat[i + 1] end
local changed = {}
local function put(field, value) sv[field] = value; changed[field] = value end
local function n(field) return tonumber(sv[field] or '') end  -- nil when missing or ''
local function fmt(x) return string.format('%.15g', x) end  -- as HINCRBYFLOAT would print it

if etype ~= 'timer' then  -- timer events read state, they are not activity
-- first/last seen; sessions (30 minutes without events end one)
local first = n('first_ts')
if not first or ts < first then put('first_ts', ts) end
local last = n('last_ts')
local sess_last = n('session_last')
if not sess_last or ts - sess_last > SESSION_GAP then
  -- visits (sessions) ever: a profile from before the count existed has had one already
  put('visits', (n('visits') or (first and 1 or 0)) + 1)
  put('session_start', ts); put('session_last', ts); put('session_events', 0)
  put('session_product_views', 0); put('session_page_views', 0)
  put('product_view_seconds', 0); put('last_pv_ts', '')
  redis.call('DEL', 'd:ss:' .. tag)
  sess_last = ts
end
if ts > sess_last then
  -- time on product pages: the gap after a product view, capped at 10 minutes
  local last_pv = n('last_pv_ts')
  if last_pv and last_pv == sess_last then
    put('product_view_seconds', fmt((n('product_view_seconds') or 0) + math.min(ts - last_pv, 600000) / 1000))
  end
  put('session_last', ts)
end
if not last or ts > last then put('last_ts', ts); last = ts end
put('session_events', (n('session_events') or 0) + 1)

-- windowed counts per type, on event time (late events land in their own place)
local tkey = 'd:ts:' .. tag .. ':' .. etype
redis.call('ZADD', tkey, ts, eid)
redis.call('ZREMRANGEBYSCORE', tkey, '-inf', '(' .. (last - MONTH))
redis.call('ZREMRANGEBYRANK', tkey, 0, -5001)
redis.call('PEXPIRE', tkey, MONTH + DAY)

if etype == 'page_view' then
  local pkey = 'd:pg:' .. tag .. ':' .. page
  redis.call('ZADD', pkey, ts, eid)
  redis.call('ZREMRANGEBYRANK', pkey, 0, -51)
  redis.call('PEXPIRE', pkey, MONTH)
  redis.call('SADD', 'd:pages:' .. tag, page)
  put('session_page_views', (n('session_page_views') or 0) + 1)
elseif etype == 'product_view' then
  put('session_product_views', (n('session_product_views') or 0) + 1)
  put('last_pv_ts', ts)
end
if product ~= '' then
  if etype == 'product_view' or etype == 'click' then
    redis.call('ZADD', 'd:rp:' .. tag, ts, product)
    redis.call('ZREMRANGEBYRANK', 'd:rp:' .. tag, 0, -21)
    -- this session's product clicks in arrival order, repeats kept: the newest 10 (the
    -- next_click strategy ranks from them and learns from the 5 before this one); a new
    -- session deletes the list, the expiry only collects lists of users gone quiet
    local ss = 'd:ss:' .. tag
    if redis.call('LPUSH', ss, product) == 1 then redis.call('PEXPIRE', ss, DAY) end
    redis.call('LTRIM', ss, 0, 9)
  end
end
if type(category) == 'string' and category ~= '' then
  redis.call('ZADD', 'd:rc:' .. tag, ts, category)
  redis.call('ZREMRANGEBYRANK', 'd:rc:' .. tag, 0, -51)
end

-- cart and orders
if etype == 'add_to_cart' or etype == 'remove_from_cart' then
  local line = redis.call('HGET', cart, product)
  local qty = 0
  if line then qty = tonumber(cjson.decode(line)['quantity']) or 0 end
  local delta = tonumber(props['quantity']) or 0
  if etype == 'add_to_cart' then qty = qty + delta else qty = qty - delta end
  if qty > 0 then
    redis.call('HSET', cart, product, cjson.encode({price = props['price'], quantity = qty,
                                                    category = props['category']}))
  else
    redis.call('HDEL', cart, product)
  end
elseif etype == 'purchase' then
  redis.call('DEL', cart)
  put('order_count', (n('order_count') or 0) + 1)
  put('lifetime_value', fmt((n('lifetime_value') or 0) + (tonumber(props['total']) or 0)))
  local lp = n('last_purchase_ts')
  if not lp or ts > lp then put('last_purchase_ts', ts) end
  for _, item in ipairs(props['items'] or {}) do
    if type(item) == 'table' and item['product_id'] then
      redis.call('SADD', 'd:bought:' .. tag, item['product_id'])
    end
  end
end

-- the event log per product, category and page (d:sx, see decisions/core/keys.py): a
-- lexicographic index '<type>|<p|c|g><length>:<id>|<event time, 13 digits>|<event id>'
-- (all scores 0), so a count over any window is one ZLEXCOUNT and the last one before now
-- one ZREVRANGEBYLEX. Old entries never count (windows reach 30 days at most); the log is
-- bounded by SX_CAP entries: when full, those older than 30 days and then the oldest go,
-- down to SX_KEEP (sx_n in the scalar state counts the entries)
local stamp = string.format('%013d', ts) .. '|' .. eid
local logged = 0
local function log(kind, value)
  if type(value) ~= 'string' or value == '' then return end
  logged = logged + redis.call('ZADD', sx, 0, etype .. '|' .. kind .. #value .. ':' .. value .. '|' .. stamp)
end
log('p', product)
if type(category) == 'string' then log('c', category) end
if etype == 'page_view' then log('g', page) end
if etype == 'purchase' and type(props['items']) == 'table' then
  for i, item in ipairs(props['items']) do
    if i > 20 then break end
    if type(item) == 'table' then log('p', item['product_id']); log('c', item['category']) end
  end
end
if logged > 0 then
  local size = (n('sx_n') or 0) + logged
  if size > SX_CAP then
    -- the entries by event time (the 13 digits after '<type>|<kind><length>:<id>|')
    local entries = {}
    for _, m in ipairs(redis.call('ZRANGE', sx, 0, -1)) do
      local head, len = string.match(m, '^([^|]*|%a)(%d+):')
      local at = #head + #len + 2 + tonumber(len) + 1
      entries[#entries + 1] = {tonumber(string.sub(m, at, at + 12)), m}
    end
    table.sort(entries, function(a, b) return a[1] < b[1] end)
    local drop, horizon = {}, last - MONTH
    for i, e in ipairs(entries) do
      if e[1] < horizon or #entries - i >= SX_KEEP then drop[#drop + 1] = e[2] end
    end
    for i = 1, #drop, 500 do
      redis.call('ZREM', sx, unpack(drop, i, math.min(i + 499, #drop)))
    end
    size = #entries - #drop
  end
  put('sx_n', size)
  -- the log expires 31 days after its last day of use: its expiry moves once a day
  local moved = n('sx_exp')
  if not moved or last - moved > DAY then
    redis.call('PEXPIRE', sx, MONTH + 2 * DAY)
    put('sx_exp', last)
  end
end

local fields = {}
for k, v in pairs(changed) do fields[#fields + 1] = k; fields[#fields + 1] = v end
if #fields > 0 then redis.call('HSET', st, unpack(fields)) end
end

-- the snapshot, as of this event's time
local snap = {}
local cart_value, cart_items, cart_lines = 0, 0, 0
local cart_products = {}
local lines = redis.call('HGETALL', cart)
for i = 1, #lines, 2 do
  local l = cjson.decode(lines[i + 1])
  local q = tonumber(l['quantity']) or 0
  cart_value = cart_value + (tonumber(l['price']) or 0) * q
  cart_items = cart_items + q
  cart_lines = cart_lines + 1
  table.insert(cart_products, lines[i])
end
snap['cart_value'] = math.floor(cart_value * 100 + 0.5) / 100
snap['cart_items'] = cart_items
snap['cart_lines'] = cart_lines
snap['cart_products'] = cart_products
local function val(field) return tonumber(sv[field] or '0') or 0 end
snap['order_count'] = val('order_count')
snap['lifetime_value'] = val('lifetime_value')
snap['session_events'] = val('session_events')
snap['session_product_views'] = val('session_product_views')
snap['session_page_views'] = val('session_page_views')
snap['session_seconds'] = math.max(0, (ts - val('session_start')) / 1000)
snap['product_view_seconds'] = val('product_view_seconds')
snap['visit_count'] = val('visits')
snap['first_visit_ever'] = val('visits') == 1
-- ARGV[8]: the windowed features to compute ('' = all). The worker asks only for what the
-- active rules read ('c:<type>:<window>', 's:<type>', 'p:<page>'): these are most of the
-- script's cost. Training replays with '' (the full snapshot), backtests with '*,...'.
-- Only when asked for by name ('*' = all of the above): counts over any window and
-- recency, per product / category / page ('n:<name>:<type>:<ms>:<scope>:<value>',
-- 'r:<name>:<type>:<scope>:<value>'; scope tp/tc/tg = this event's product / category /
-- page, p/c/g = the named one, '' = every event of the type) and 'sp' (since this product
-- was last viewed before now).
local spec = ARGV[8] or ''
local full = spec == ''
local want_count, want_since, want_page, scoped = {}, {}, {}, {}
local want_sp = full
for tok in string.gmatch(spec, '[^,]+') do
  local kind = string.sub(tok, 1, 2)
  if tok == '*' then full = true; want_sp = true
  elseif tok == 'sp' then want_sp = true
  elseif kind == 'n:' or kind == 'r:' then
    local parts = {}
    for p in string.gmatch(string.sub(tok, 3) .. ':', '([^:]*):') do parts[#parts + 1] = p end
    scoped[#scoped + 1] = parts
  else
    local k, a, b = string.match(tok, '^(%a):([^:]+):?(.*)$')
    if k == 'c' then want_count[a .. '|' .. b] = true; want_count[a] = true
    elseif k == 's' then want_since[a] = true
    elseif k == 'p' then want_page[a] = true end
  end
end
for _, t in ipairs(TYPES) do
  local k = 'd:ts:' .. tag .. ':' .. t
  if full or want_count[t] then
    for _, w in ipairs(WINDOWS) do
      if full or want_count[t .. '|' .. w[1]] then
        snap['count_' .. t .. '_' .. w[1]] = redis.call('ZCOUNT', k, ts - w[2], ts)
      end
    end
  end
  if full or want_since[t] then
    local lastof = redis.call('ZREVRANGEBYSCORE', k, ts, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if #lastof > 0 then snap['since_' .. t] = (ts - tonumber(lastof[2])) / 1000 else snap['since_' .. t] = -1 end
  end
end
local pages
if full then
  pages = redis.call('SMEMBERS', 'd:pages:' .. tag)
else
  pages = {}
  for page, _ in pairs(want_page) do table.insert(pages, page) end
end
for _, page in ipairs(pages) do
  local k = 'd:pg:' .. tag .. ':' .. page
  local lastof = redis.call('ZREVRANGEBYSCORE', k, ts, '-inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if #lastof > 0 then snap['since_page_' .. page] = (ts - tonumber(lastof[2])) / 1000 end
end
if #scoped > 0 or (want_sp and product ~= '') then  -- per product / category / page
  -- the scope's index prefix: nil when the event has no such product / category / page
  local this = {tp = {'p', product}, tc = {'c', category},
                tg = {'g', etype == 'page_view' and page or ''}}
  local function prefix(etype_, code, value)
    local kind = code
    if this[code] then kind, value = this[code][1], this[code][2] end
    if type(value) ~= 'string' or value == '' then return nil end
    return etype_ .. '|' .. kind .. #value .. ':' .. value .. '|'
  end
  local now = string.format('%013d', ts)
  -- the latest entry of a prefix strictly before this event's time, as seconds ago
  local function previous(pre)
    local hit = redis.call('ZREVRANGEBYLEX', sx, '(' .. pre .. now, '[' .. pre, 'LIMIT', 0, 1)
    if #hit == 0 then return nil end
    return (ts - tonumber(string.sub(hit[1], #pre + 1, #pre + 13))) / 1000
  end
  local after = string.format('%013d', ts + 1)  -- up to this event's time, inclusive
  for _, q in ipairs(scoped) do
    local name, etype_ = q[1], q[2]
    if #q == 5 then  -- a count: name, type, window (ms), scope, value
      local window, code, value = tonumber(q[3]), q[4], q[5]
      if code == '' then  -- every event of the type, any window
        snap[name] = redis.call('ZCOUNT', 'd:ts:' .. tag .. ':' .. etype_, ts - window, ts)
      else
        local pre = prefix(etype_, code, value)
        if pre then
          local from = '[' .. pre .. string.format('%013d', math.max(0, ts - window))
          snap[name] = redis.call('ZLEXCOUNT', sx, from, '(' .. pre .. after)
        end
      end
    else  -- recency: name, type, scope, value
      local pre = prefix(etype_, q[3], q[4])
      if pre then snap[name] = previous(pre) end
    end
  end
  if want_sp and product ~= '' then
    -- since this product was last viewed (product_view or click) before now; nil if never
    local a = previous(prefix('product_view', 'tp'))
    local b = previous(prefix('click', 'tp'))
    if a and b then a = math.min(a, b) end
    snap['since_same_product_view'] = a or b
  end
end
local first_ts = tonumber(sv['first_ts'] or '') or ts
snap['days_since_first_seen'] = math.max(0, (ts - first_ts) / DAY)
local lp = tonumber(sv['last_purchase_ts'] or '')
if lp then snap['days_since_last_purchase'] = math.max(0, (ts - lp) / DAY) else snap['days_since_last_purchase'] = -1 end
snap['recent_products'] = redis.call('ZREVRANGE', 'd:rp:' .. tag, 0, 19)
snap['session_products'] = redis.call('LRANGE', 'd:ss:' .. tag, 0, 9)
snap['recent_categories'] = redis.call('ZREVRANGE', 'd:rc:' .. tag, 0, 9)
snap['distinct_categories_30d'] = redis.call('ZCOUNT', 'd:rc:' .. tag, ts - MONTH, '+inf')
snap['segments'] = redis.call('SMEMBERS', 'd:seg:' .. tag)
local out = cjson.encode(snap)
redis.call('SET', seen, out, 'EX', ttl)
return {0, out}
