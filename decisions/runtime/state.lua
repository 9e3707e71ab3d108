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
local since_same_product_view = -1
local product = ARGV[7]
local ttl = tonumber(ARGV[5])
local st = 'd:st:' .. tag
local cart = 'd:cart:' .. tag
local DAY = 86400000
local MONTH = 30 * DAY
local SESSION_GAP = 30 * 60000
local TYPES = {'page_view', 'product_view', 'click', 'add_to_cart', 'remove_from_cart', 'purchase', 'search'}
local WINDOWS = {{'5m', 300000}, {'1h', 3600000}, {'24h', DAY}, {'30d', MONTH}}

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
  local page = ARGV[6]
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
  local pv = 'd:pv:' .. tag
  local seen_at = tonumber(redis.call('HGET', pv, product) or '')
  if seen_at and seen_at <= ts then since_same_product_view = (ts - seen_at) / 1000 end
  if etype == 'product_view' or etype == 'click' then
    if etype == 'product_view' then since_same_product_view = 0 end
    if not seen_at or ts > seen_at then redis.call('HSET', pv, product, ts) end
    redis.call('ZADD', 'd:rp:' .. tag, ts, product)
    redis.call('ZREMRANGEBYRANK', 'd:rp:' .. tag, 0, -21)
    -- this session's product clicks in arrival order, repeats kept: the newest 10 (the
    -- next_click strategy ranks from them and learns from the 5 before this one); a new
    -- session deletes the list, the expiry only collects lists of users gone quiet
    local ss = 'd:ss:' .. tag
    if redis.call('LPUSH', ss, product) == 1 then redis.call('PEXPIRE', ss, DAY) end
    redis.call('LTRIM', ss, 0, 9)
  end
  redis.call('PEXPIRE', pv, MONTH)
end
local category = props['category']
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
-- ARGV[8]: the windowed features to compute ('' = all). The worker asks only for what the
-- active rules read ('c:<type>:<window>', 's:<type>', 'p:<page>'): these are most of the
-- script's cost. Training and backtests replay with '' (the full snapshot).
local spec = ARGV[8] or ''
local full = spec == ''
local want_count, want_since, want_page = {}, {}, {}
if not full then
  for tok in string.gmatch(spec, '[^,]+') do
    local kind, a, b = string.match(tok, '^(%a):([^:]+):?(.*)$')
    if kind == 'c' then want_count[a .. '|' .. b] = true; want_count[a] = true
    elseif kind == 's' then want_since[a] = true
    elseif kind == 'p' then want_page[a] = true end
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
snap['since_same_product_view'] = since_same_product_view
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
