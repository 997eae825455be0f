select member_id, first_name, joined_on, membership from {{ source('raw', 'members') }}
